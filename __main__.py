"""Phoenix: load this stack's config, build the components, export a summary. See README.md."""

from pathlib import Path

import pulumi

from phoenix_components.program import build, load_stack_environment


def main() -> None:
    environment = load_stack_environment(Path(__file__).parent / "config")
    for name, value in build(environment).items():
        pulumi.export(name, value)


if __name__ == "__main__":
    main()
