"""The render layer's errors: a value cannot be rendered into what a host or instance reads.

These come up at deploy time, from facts the config cannot know (the device minors the host's NVIDIA
inventory reports, the AMIs EC2 lists) or from limits of the target format (EC2's 16 KiB of user-data), so
they are not :class:`~phoenix_components.config.errors.ConfigError`\\ s.
"""

from __future__ import annotations

import re

from providers.errors import PhoenixError

# A control character (C0 or DEL): a line break, a carriage return, a NUL. One search, not a loop per
# character: renderers check every value they write (bench/eval_scale counts it at 500 guests).
CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")


class GpuMinorError(PhoenixError):
    """A GPU's device node is unknown, or the host's inventory contradicts host.json."""


class AmiNotFoundError(PhoenixError):
    """No image fits the criteria; the message says what was asked and why each candidate was refused."""


class UserDataError(PhoenixError):
    """cloud-init user-data cannot be rendered: a name that cannot go into its comment, or too large."""


class UnsafeValueError(PhoenixError, ValueError):
    """A value that would change the meaning of the text it is written into: a line break in a raw LXC
    config line, a control character in a systemd unit. The models refuse these first; this is the last
    guard before the host. A ValueError too, for callers that treat it as a bad value."""
