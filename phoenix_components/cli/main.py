"""`phoenix`: the offline companion to the Pulumi CLI. No credentials, no network, nothing executed.

phoenix validate [--stack S | --env ENV]      check the config; exit 2 with `file: json.path: message`
phoenix plan     [--stack S | --env ENV]      per resource, the API calls and host commands of an up
phoenix graph    [--format mermaid|dot]       the chain, guests, Compose stacks and `after` edges as a graph
phoenix schema   [--write]                    regenerate / check config/schema/*.json
phoenix preview  [--stack S]                  `pulumi preview`, or the offline view when the CLI is missing
phoenix import   --from-bash DIR --environment NAME   the bash Phoenix's etc/ files as an environment
phoenix import   --from-host --stack S [--out FILE]   a live host's unmanaged containers to adopt (reads it:
                                              the stack's secrets, PVE API and SSH; cli/host_import.py)
phoenix backend bootstrap s3://BUCKET         the Pulumi state bucket on S3 (calls AWS; see cli/aws.py)
phoenix models sync --bucket B DIR            model files to/from the cache bucket (calls AWS)

Exit 2: invalid config, one `file: json.path: message` line per mistake. Exit 1: something else stopped
the command (a stale schema, a GPU inventory that contradicts host.json, AWS), said as what it is.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from phoenix_components.cli.aws import EXIT_FAILED
from phoenix_components.cli.aws import register as register_aws_commands
from phoenix_components.cli.bash_import import import_from_bash
from phoenix_components.cli.plan import build_plan, render_dot, render_mermaid, render_plan
from phoenix_components.config.cloud import (
    cloud_environment_names,
    is_cloud_environment,
    load_cloud_environment,
)
from phoenix_components.config.errors import ConfigError, PromotionError
from phoenix_components.config.load import Environment, environment_names, load_environment
from phoenix_components.config.promotion import promote, write_lock
from phoenix_components.config.schema import stale, write
from phoenix_components.config.stacks import stack_environment
from providers.errors import PhoenixError

EXIT_INVALID = 2
EXIT_STALE = 1

NO_CLI = (
    "The Pulumi CLI (`pulumi`) is not on PATH, so `pulumi preview` cannot run here.\n"
    "Install it from https://www.pulumi.com/docs/install/ (it is not on PyPI), then run\n"
    "`make preview STACK={stack}` again. Meanwhile, here is the offline view of stack {stack!r}:\n"
    "`phoenix validate`, `phoenix plan` and `phoenix graph` (no credentials, nothing executed)."
)


def _project_dir() -> Path:
    """The directory with Pulumi.yaml: the working directory when it has one, else this checkout."""
    cwd = Path.cwd()
    return cwd if (cwd / "Pulumi.yaml").is_file() else Path(__file__).resolve().parents[1]


def _print_problems(error: ConfigError) -> int:
    print(
        f"invalid config ({len(error.problems)} problem{'s' if len(error.problems) != 1 else ''}):",
        file=sys.stderr,
    )
    for problem in error.problems:
        print(problem, file=sys.stderr)
    return EXIT_INVALID


def _environment(args: argparse.Namespace) -> Environment:
    env = args.env or stack_environment(_project_dir(), args.stack)
    if is_cloud_environment(args.config, env):
        raise ConfigError(
            [
                f"environments/{env}/cloud.json: $: {env} is an AWS environment; `phoenix {args.command}` "
                "shows a Proxmox host's resources. `phoenix validate` checks it offline and "
                f"`pulumi preview --stack {args.stack}` plans it."
            ]
        )
    return load_environment(args.config, env)


def _validate(args: argparse.Namespace) -> int:
    """Every environment, or the one ``--env`` names, or the one ``--stack``'s file selects (an unknown
    stack is an error, not a silent "everything")."""
    if args.env:
        names = [args.env]
    elif args.stack is not None:
        names = [stack_environment(_project_dir(), args.stack)]
    else:
        names = environment_names(args.config) + cloud_environment_names(args.config)
    if not names:
        raise ConfigError([f"{args.config}: $: no environments/<env>/host.json or cloud.json found"])
    problems: list[str] = []
    for name in names:
        try:
            if is_cloud_environment(args.config, name):
                cloud = load_cloud_environment(args.config, name).cloud
                features = ", ".join(cloud.features)
                print(f"{name}: ok (AWS {cloud.region}, {cloud.instance.type}, features {features})")
                continue
            env = load_environment(args.config, name)
        except ConfigError as error:
            problems.extend(error.problems)
            continue
        counts = (len(env.chain.layers), len(env.guests.containers), len(env.guests.vms))
        print(
            f"{name}: ok ({counts[0]} layers, {counts[1]} containers, {counts[2]} VMs, node {env.host.node})"
        )
    if problems:
        # chain.json is shared: its mistakes come back from every environment, and are printed once.
        raise ConfigError(list(dict.fromkeys(problems)))
    return 0


def _plan(args: argparse.Namespace) -> int:
    env = _environment(args)
    print(render_plan(env, build_plan(env)), end="")
    return 0


def _graph(args: argparse.Namespace) -> int:
    resources = build_plan(_environment(args))
    print(render_dot(resources) if args.format == "dot" else render_mermaid(resources), end="")
    return 0


def _schema(args: argparse.Namespace) -> int:
    schema_dir = args.config / "schema"
    if args.write:
        changed = write(schema_dir)
        print(f"wrote {', '.join(changed)}" if changed else "schemas are up to date")
        return 0
    outdated = stale(schema_dir)
    if outdated:
        print(f"stale: {', '.join(outdated)}; run `make schema`", file=sys.stderr)
        return EXIT_STALE
    print("schemas are up to date")
    return 0


NO_STACK = (
    "The Pulumi CLI is here, but `pulumi stack select {stack}` failed ({why}), so `pulumi preview` cannot\n"
    "run yet. Log in to a backend once (`pulumi login` for Pulumi Cloud, or `pulumi login file://<dir>`\n"
    "for a local one) and create the stack (`pulumi stack init {stack}`), then run `make preview\n"
    "STACK={stack}` again. Meanwhile, here is the offline view of stack {stack!r}:"
)


def _preview(args: argparse.Namespace) -> int:
    pulumi = shutil.which("pulumi")
    if pulumi is not None:
        # The program's Python: the language host `make pulumi` builds reads it from here
        # (docs/pulumi-cli.md); a CLI installed the usual way honours it too.
        env = {**os.environ, "PULUMI_PYTHON_CMD": sys.executable}
        project = _project_dir()
        select = subprocess.run(
            [pulumi, "stack", "select", args.stack, "--non-interactive"],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if select.returncode == 0:
            preview = [pulumi, "preview", "--stack", args.stack]
            return subprocess.run(preview, cwd=project, env=env, check=False).returncode
        why = (select.stderr.strip().splitlines() or ["no reason given"])[-1].removeprefix("error: ")
        print(NO_STACK.format(stack=args.stack, why=why), file=sys.stderr)
    else:
        print(NO_CLI.format(stack=args.stack), file=sys.stderr)
    name = args.env or stack_environment(_project_dir(), args.stack)
    if is_cloud_environment(args.config, name):
        load_cloud_environment(args.config, name)
        print(f"\n== phoenix validate: {name}: ok (an AWS environment: the plan needs `pulumi preview`)")
        return 0
    environment = _environment(args)
    print(f"\n== phoenix validate: {environment.name}: ok\n")
    resources = build_plan(environment)
    print("== phoenix plan\n")
    print(render_plan(environment, resources))
    print("== phoenix graph (Mermaid)\n")
    print(render_mermaid(resources), end="")
    return 0


def _source_outputs(args: argparse.Namespace) -> dict[str, object]:
    if args.outputs is not None:
        loaded: dict[str, object] = json.loads(args.outputs.read_text())
        return loaded
    pulumi = shutil.which("pulumi")
    if pulumi is None:
        raise PromotionError(
            f"the Pulumi CLI is not on PATH to read the {args.source} stack's outputs; save them where it is "
            f"with `pulumi stack output --json --stack {args.source} > outputs.json`, then pass "
            "--outputs outputs.json"
        )
    run = subprocess.run(
        [pulumi, "stack", "output", "--json", "--stack", args.source],
        capture_output=True,
        text=True,
        check=False,
    )
    if run.returncode != 0:
        raise PromotionError(f"`pulumi stack output --stack {args.source}` failed: {run.stderr.strip()}")
    outputs: dict[str, object] = json.loads(run.stdout)
    return outputs


def _promote(args: argparse.Namespace) -> int:
    project = _project_dir()
    target_env = stack_environment(project, args.target)
    env = load_environment(args.config, target_env, promotion=False)
    keys = {name: env.layer_key(name) for name in env.built_layers()}
    try:
        lock = promote(_source_outputs(args), keys, stack_environment(project, args.source))
    except PromotionError as error:
        print(error, file=sys.stderr)
        return EXIT_INVALID
    path = write_lock(args.config, target_env, lock)
    reuse = {layer.node for layer in lock.layers.values()} == {env.host.node}
    how = (
        "reuses these templates" if reuse else f"builds each layer once on {env.host.node} from the same keys"
    )
    print(f"wrote {path}: {len(lock.layers)} verified layers from {lock.source}; {args.target} {how}")
    return 0


HOST_IMPORT = "phoenix_components.cli.host_import"


def _import(args: argparse.Namespace) -> int:
    if args.from_bash is not None:
        return import_from_bash(args)
    # --from-host lives in its own module (cli/host_import.py), which may not be there yet.
    if importlib.util.find_spec(HOST_IMPORT) is None:
        print("phoenix import --from-host: not available yet", file=sys.stderr)
        return EXIT_INVALID
    code: int = importlib.import_module(HOST_IMPORT).import_from_host(args)
    return code


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="phoenix",
        description=(__doc__ or "").splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    sub = root.add_subparsers(dest="command", required=True)

    def command(name: str, help: str, stack: str | None = "dev") -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        p.add_argument("--config", type=Path, default=_project_dir() / "config", help="config directory")
        p.add_argument("--stack", default=stack, help="Pulumi stack; its file names the environment")
        p.add_argument("--env", help="environment under config/environments (overrides --stack)")
        return p

    command(
        "validate", "check the config (every environment unless --env or --stack)", stack=None
    ).set_defaults(run=_validate)
    command("plan", "what an up would call and run, per resource, in order").set_defaults(run=_plan)
    graph = command("graph", "the resource graph as Mermaid or DOT")
    graph.add_argument("--format", choices=("mermaid", "dot"), default="mermaid")
    graph.set_defaults(run=_graph)
    schema = command("schema", "check (or --write) config/schema/*.json against the models")
    schema.add_argument("--write", action="store_true")
    schema.set_defaults(run=_schema)
    command("preview", "pulumi preview, or the offline view when the CLI is missing").set_defaults(
        run=_preview
    )
    promote = command("promote", "pin the layers verified in one stack for the next (dev → staging → prod)")
    promote.add_argument(
        "--from", dest="source", required=True, help="the stack whose verified layers to promote"
    )
    promote.add_argument("--to", dest="target", required=True, help="the stack that will deploy them")
    promote.add_argument(
        "--outputs",
        type=Path,
        help="the source's `pulumi stack output --json` saved to a file (no CLI needed)",
    )
    promote.set_defaults(run=_promote)
    imports = sub.add_parser("import", help="an environment from the bash Phoenix's files or a live host")
    source = imports.add_mutually_exclusive_group(required=True)
    source.add_argument("--from-bash", type=Path, metavar="DIR", help="the bash Phoenix's etc/ directory")
    source.add_argument("--from-host", action="store_true", help="the guests of the stack's live host")
    imports.add_argument("--config", type=Path, default=_project_dir() / "config", help="config directory")
    imports.add_argument("--stack", help="Pulumi stack (with --from-host; default dev): its host and secrets")
    imports.add_argument("--environment", metavar="NAME", help="the environment to write (--from-bash)")
    imports.add_argument(
        "--out",
        type=Path,
        help="where to write it: --from-bash a directory (default config/environments/NAME), "
        "--from-host a file (default stdout)",
    )
    imports.add_argument("--force", action="store_true", help="overwrite an existing environment")
    imports.add_argument("--report", type=Path, metavar="FILE", help="also write the report as JSON")
    imports.add_argument("--node", help="PVE node name (default: the bash network.hostname, else phoenix)")
    imports.add_argument("--ssh-host-key", help="the host's SSH key fingerprint SHA256:... (ssh-keygen -lf)")
    imports.add_argument("--nvidia-sha256", help="sha256 of the NVIDIA runfile the bash config downloads")
    imports.add_argument("--gpu-memory-mib", type=int, help="memory of each GPU in MiB (nvidia-smi)")
    imports.set_defaults(run=_import)
    register_aws_commands(sub)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except ConfigError as error:
        return _print_problems(error)
    except PhoenixError as error:
        # Not a mistake in the files (a GPU inventory that contradicts host.json, a secret or host the
        # command needed): said as what it is, without "invalid config" and without a traceback.
        print(f"phoenix {args.command}: {error}", file=sys.stderr)
        return EXIT_FAILED
    except BrokenPipeError:  # `phoenix plan | head`: the reader stopped early, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())
