"""providers.channels.ssh without a network: host key pins, fingerprints, client keys, the executor pool."""

from __future__ import annotations

import base64
from pathlib import Path

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from providers.base import HostProvider
from providers.channels import ssh
from providers.channels.ssh import (
    HostKeyPin,
    PinnedHostKeyPolicy,
    fingerprint,
    load_private_key,
    parse_host_key,
)
from providers.channels.targets import Credentials, SshTarget
from providers.errors import HostKeyMismatchError, InvalidTargetError, MissingCredentialsError, NoTargetError

# A real host key and what `ssh-keygen -lf` printed for it (captured, not computed by the code under test).
HOST_PUB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEm4lBrvv9Mq1IpkssV5JNbE3d7PQEBhPnJI0yBNdTGr host"
HOST_FP = "SHA256:/NKqBMm2KFOWQnCAXu4vdQ3gj1TtQyzYByEuDvYeJX0"
KEYGEN_LINE = f"256 {HOST_FP} host (ED25519)"


def host_key() -> paramiko.PKey:
    return paramiko.Ed25519Key(data=base64.b64decode(HOST_PUB.split()[1]))


PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def private_text(
    key: PrivateKey,
    fmt: serialization.PrivateFormat = serialization.PrivateFormat.OpenSSH,
    password: bytes = b"",
) -> str:
    encryption = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, fmt, encryption).decode()


def public_fingerprint(key: PrivateKey) -> str:
    line = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return fingerprint(base64.b64decode(line.split()[1]))


@pytest.fixture(autouse=True)
def empty_pool() -> None:
    ssh.close_all()


def test_fingerprint_is_what_ssh_keygen_prints() -> None:
    assert fingerprint(base64.b64decode(HOST_PUB.split()[1])) == HOST_FP


@pytest.mark.parametrize(
    ("pin", "expected"),
    [
        (HOST_FP, HostKeyPin(HOST_FP)),
        (HOST_FP + "=", HostKeyPin(HOST_FP)),  # padded base64 is the same fingerprint
        (KEYGEN_LINE, HostKeyPin(HOST_FP, "ssh-ed25519")),
        (f"  {KEYGEN_LINE}\n", HostKeyPin(HOST_FP, "ssh-ed25519")),
        (f"256 {HOST_FP} root@vm (ECDSA)", HostKeyPin(HOST_FP, "ecdsa-sha2-nistp256")),
        (f"3072 {HOST_FP} root@vm (RSA)", HostKeyPin(HOST_FP, "ssh-rsa")),
        (HOST_PUB, HostKeyPin(HOST_FP, "ssh-ed25519")),
        (" ".join(HOST_PUB.split()[:2]), HostKeyPin(HOST_FP, "ssh-ed25519")),
        (f"[pve1]:22 {HOST_PUB}", HostKeyPin(HOST_FP, "ssh-ed25519")),  # a known_hosts line
    ],
)
def test_pins_in_the_forms_openssh_prints(pin: str, expected: HostKeyPin) -> None:
    assert parse_host_key(pin) == expected


@pytest.mark.parametrize(
    ("pin", "says"),
    [
        ("MD5:1f:7a:bd:2d:2f:a7:97:8d:38:cf:82:fd:c8:0c:49:33", "expected `SHA256:...`"),
        ("SHA256:abc", "43 base64 characters"),
        ("", "expected `SHA256:...`"),
        ("ssh-ed25519 not-base64!", "not valid base64"),
        ("ssh-rsa " + HOST_PUB.split()[1], "not a ssh-rsa key"),
    ],
)
def test_unusable_pins_are_invalid_targets(pin: str, says: str) -> None:
    with pytest.raises(InvalidTargetError) as caught:
        parse_host_key(pin)
    assert says in str(caught.value)


def test_a_typed_pin_restricts_what_the_server_may_present() -> None:
    rsa_only = HostKeyPin(HOST_FP, "ssh-rsa").disabled_host_key_algorithms()
    assert "ssh-ed25519" in rsa_only and "ecdsa-sha2-nistp256" in rsa_only
    assert "rsa-sha2-512" not in rsa_only and "rsa-sha2-256" not in rsa_only
    assert HostKeyPin(HOST_FP).disabled_host_key_algorithms() == []


def test_policy_accepts_the_pinned_key_only() -> None:
    client = paramiko.SSHClient()
    PinnedHostKeyPolicy("pve1", parse_host_key(HOST_PUB)).missing_host_key(client, "pve1", host_key())
    other = paramiko.Ed25519Key(data=base64.b64decode(HOST_PUB.split()[1])[:-1] + b"\x00")
    with pytest.raises(HostKeyMismatchError) as caught:
        PinnedHostKeyPolicy("pve1", parse_host_key(HOST_FP)).missing_host_key(client, "pve1", other)
    error = caught.value
    assert error.host == "pve1" and error.expected == HOST_FP
    assert error.got == f"{fingerprint(other.asbytes())} (ssh-ed25519)" and error.got != HOST_FP


@pytest.mark.parametrize(
    ("key", "fmt", "name"),
    [
        (ed25519.Ed25519PrivateKey.generate(), serialization.PrivateFormat.OpenSSH, "ssh-ed25519"),
        (ec.generate_private_key(ec.SECP256R1()), serialization.PrivateFormat.OpenSSH, "ecdsa-sha2-nistp256"),
        (
            ec.generate_private_key(ec.SECP384R1()),
            serialization.PrivateFormat.TraditionalOpenSSL,
            "ecdsa-sha2-nistp384",
        ),
        (rsa.generate_private_key(65537, 2048), serialization.PrivateFormat.OpenSSH, "ssh-rsa"),
        (rsa.generate_private_key(65537, 2048), serialization.PrivateFormat.TraditionalOpenSSL, "ssh-rsa"),
    ],
)
def test_client_keys_of_every_supported_type_load(
    key: PrivateKey,
    fmt: serialization.PrivateFormat,
    name: str,
) -> None:
    loaded = load_private_key(Credentials(ssh_private_key=private_text(key, fmt=fmt)))
    assert loaded.get_name() == name
    assert fingerprint(loaded.asbytes()) == public_fingerprint(key)


def test_key_text_wins_over_key_file(tmp_path: Path) -> None:
    in_text, in_file = ed25519.Ed25519PrivateKey.generate(), ed25519.Ed25519PrivateKey.generate()
    path = tmp_path / "id"
    path.write_text(private_text(in_file))
    assert fingerprint(load_private_key(Credentials(ssh_key_file=str(path))).asbytes()) == public_fingerprint(
        in_file
    )
    both = Credentials(ssh_private_key=private_text(in_text), ssh_key_file=str(path))
    assert fingerprint(load_private_key(both).asbytes()) == public_fingerprint(in_text)


def test_key_problems_name_the_source_never_the_key(tmp_path: Path) -> None:
    encrypted = private_text(ed25519.Ed25519PrivateKey.generate(), password=b"pw")
    mangled = private_text(ed25519.Ed25519PrivateKey.generate()).replace("OPENSSH", "DSA")
    cases = [
        ("no SSH key", Credentials()),
        ("cannot read it", Credentials(ssh_key_file=str(tmp_path / "missing"))),
        ("passphrase-protected", Credentials(ssh_private_key=encrypted)),
        ("not an ed25519, ecdsa or rsa private key", Credentials(ssh_private_key=mangled)),
    ]
    for says, creds in cases:
        with pytest.raises(MissingCredentialsError) as caught:
            load_private_key(creds)
        assert says in str(caught.value)
        for body in (encrypted.splitlines()[1], mangled.splitlines()[1]):
            assert body not in str(caught.value) and body not in repr(caught.value.__cause__)


def test_one_executor_per_host_user_pin_and_key() -> None:
    creds = Credentials(ssh_private_key=private_text(ed25519.Ed25519PrivateKey.generate()))
    target = SshTarget("pve1", 22, "root", HOST_FP)
    executor = ssh.executor_for(target, creds)
    assert ssh.executor_for(SshTarget("pve1", 22, "root", KEYGEN_LINE), creds) is executor  # same pin
    other_key = Credentials(ssh_private_key=private_text(ed25519.Ed25519PrivateKey.generate()))
    others = [
        ssh.executor_for(SshTarget("pve2", 22, "root", HOST_FP), creds),
        ssh.executor_for(SshTarget("pve1", 2222, "root", HOST_FP), creds),
        ssh.executor_for(SshTarget("pve1", 22, "admin", HOST_FP), creds),
        ssh.executor_for(SshTarget("pve1", 22, "root", "SHA256:" + "A" * 43), creds),
        ssh.executor_for(target, other_key),
    ]
    assert len({id(e) for e in [executor, *others]}) == 6
    assert executor.stats == ssh.SshStats(handshakes=0, sessions=0)  # lazy: nothing connected yet
    ssh.close_all()
    assert ssh.executor_for(target, creds) is not executor


def test_a_bad_timeout_is_refused_before_connecting() -> None:
    creds = Credentials(ssh_private_key=private_text(ed25519.Ed25519PrivateKey.generate()))
    executor = ssh.executor_for(SshTarget("pve1.invalid", 22, "root", HOST_FP), creds)
    with pytest.raises(ValueError, match="timeout must be positive"):
        executor.run(["true"], timeout=0)
    assert executor.stats.handshakes == 0


def test_host_provider_hands_out_the_pooled_executor() -> None:
    creds = Credentials(ssh_private_key=private_text(ed25519.Ed25519PrivateKey.generate()))
    provider = HostProvider(ssh_target=SshTarget("pve1", 22, "root", HOST_FP))
    provider._credentials = creds
    assert provider.ssh() is ssh.executor_for(SshTarget("pve1", 22, "root", HOST_FP), creds)
    with pytest.raises(NoTargetError, match="no ssh_target"):
        HostProvider().ssh()
