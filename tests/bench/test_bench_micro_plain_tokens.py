"""bench/micro_plain_tokens.py runs, and its two paths write the same events (it fails otherwise)."""

import re

from bench import micro_plain_tokens


def test_both_paths_are_measured_on_the_same_events(capsys):
    assert micro_plain_tokens.main(["--tokens", "300", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"python path +[\d.]+ us/token", out), out
    assert re.search(r"native path +[\d.]+ us/token +\([\d.]+x\)", out), out
