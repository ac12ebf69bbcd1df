"""Hypothesis strategies for hostile values: shell, YAML and systemd metacharacters, and anything else."""

from __future__ import annotations

from hypothesis import strategies as st

METACHARACTERS = [
    ";",
    "$(",
    ")",
    "`",
    "'",
    '"',
    "\n",
    "\r",
    " ",
    "\t",
    "|",
    "&",
    ">",
    "<",
    "*",
    "?",
    "\\",
    "$",
    "#",
    "~",
    "%",
    ": ",
    "- ",
    "{",
    "}",
    "[",
    "]",
    "!",
    "\x85",
    "\u2028",
]
hostile = st.lists(
    st.one_of(
        st.sampled_from(METACHARACTERS),
        st.text(st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=4).filter(
            lambda t: "\x00" not in t
        ),
    ),
    min_size=1,
    max_size=8,
).map("".join)
"""Text built from shell/YAML/systemd metacharacters and arbitrary characters (no NUL: argv cannot carry
one)."""
words = st.text(
    st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), min_size=1, max_size=12
)
arg = st.one_of(hostile, words)
env_key = st.from_regex(r"[A-Z_][A-Z0-9_]{0,15}", fullmatch=True)
