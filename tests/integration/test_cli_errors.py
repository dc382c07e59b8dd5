"""Errors that teach: an unknown flag shows its subcommand's usage and the closest flag, and every
numeric flag is range-checked the same way in every command (one `error:` line naming the flag
and the value). Argument errors exit before anything is imported or run, so most tests call
`main` in this process."""

from __future__ import annotations

import argparse

import pytest

from smoothrecon.cli.main import _config, build_parser, main
from smoothrecon.errors import UserError

# Each numeric flag, its range and values outside it (nan and inf are never in range).
RANGES = {
    "--eps-rel": ("[0, 1]", ["5", "-0.01", "1.5", "nan"]),
    "--sigma-f": (">= 0", ["-0.1", "inf"]),
    "--sigma-g": (">= 0", ["-1"]),
    "--k": (">= 1", ["0", "-3", "2.5"]),
    "--steps": (">= 1", ["0"]),
    "--restarts": (">= 1", ["0"]),
    "--epochs": (">= 1", ["0", "1.5"]),
    "--factor": (">= 1", ["0"]),
    "--threads": (">= 0", ["-1"]),
    "--n": (">= 2", ["1"]),  # certify's Monte-Carlo sample count
    "--alpha": ("(0, 1)", ["0", "1"]),
    "--percentile": ("(0, 1)", ["0", "1", "-0.5"]),  # certify's median percentile
    # certify's methods: a name or methods joined by +, nothing else
    "--method": ("is not one of", ["x", "pixel+x", "pixel+"]),
}
# The certified radius needs noise: certify's --sigma-g is > 0.
EXCEPTIONS = {("certify", "--sigma-g"): ("> 0", ["0", "-1"])}


def subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def numeric_flags() -> list[tuple[str, str]]:
    """(command, flag) of every option whose value is parsed (has a type=) in every command."""
    found = []
    for command, p in subparsers().items():
        for action in p._actions:
            if action.type is not None and action.option_strings:
                found.append((command, action.option_strings[-1]))
    return found


def run_main(capsys, *argv: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    return int(info.value.code or 0), capsys.readouterr().err


def test_every_numeric_flag_has_a_range() -> None:
    flags = numeric_flags()
    assert ("attack", "--eps-rel") in flags and ("evaluate", "--steps") in flags
    for command, flag in flags:
        assert flag in RANGES or flag == "--sigma-g", (command, flag)


@pytest.mark.parametrize(("command", "flag"), numeric_flags())
def test_values_outside_the_range_are_refused_in_one_line(capsys, command, flag) -> None:
    expected, bad_values = EXCEPTIONS.get((command, flag), RANGES[flag])
    for bad in bad_values:
        code, err = run_main(capsys, command, flag, bad)
        assert code == 2
        assert err.startswith(f"usage: smoothrecon {command}"), err
        errors = [line for line in err.splitlines() if "error:" in line]
        assert len(errors) == 1, err
        assert f"argument {flag}:" in errors[0] and f"'{bad}'" in errors[0], errors[0]
        assert expected in errors[0], errors[0]


@pytest.mark.parametrize(
    ("argv", "key", "value"),
    [
        (["train", "--epochs", "3"], ("train", "epochs"), 3),
        (["train", "--sigma-f", "0"], ("train", "sigma_f"), 0.0),
        (["train", "--eps-rel", "1"], ("train", "eps_rel"), 1.0),
        (["attack", "--eps-rel", "0,1", "--steps", "7"], ("attack", "steps"), 7),
        (["evaluate", "--restarts", "3"], ("attack", "restarts"), 3),
        (["evaluate", "--k", "1", "--sigma-g", "0,0.5"], ("smoothing", "k"), 1),
    ],
)
def test_values_at_the_edges_are_accepted_and_reach_the_config(argv, key, value) -> None:
    if argv[0] in ("attack", "evaluate"):
        argv = [*argv, "--model", "bilinear"]
    args = build_parser().parse_args([*argv, "--preset", "smoke", "--out", "x"])
    if argv[0] == "train":
        args.eps_rel_train = args.eps_rel  # as main does
    cfg = _config(args)
    assert getattr(getattr(cfg, key[0]), key[1]) == value


def test_evaluate_sigma_g_takes_grid() -> None:
    argv = ["evaluate", "--model", "m", "--sigma-g", "grid", "--out", "x"]
    assert build_parser().parse_args(argv).sigma_g == "grid"


def test_steps_with_the_fixed_thesis_attack_is_refused() -> None:
    argv = ["attack", "--model", "bilinear", "--eps-rel", "0.01", "--attack", "thesis"]
    args = build_parser().parse_args([*argv, "--steps", "50", "--preset", "smoke", "--out", "x"])
    with pytest.raises(UserError, match="--attack thesis"):
        _config(args)


def test_unknown_flag_suggests_the_subcommands_closest_flag(capsys) -> None:
    code, err = run_main(capsys, "train", "--sigam-f", "0.1", "--out", "x")
    assert code == 2
    assert err.startswith("usage: smoothrecon train")
    assert "did you mean --sigma-f?" in err.splitlines()[-1]


def test_unknown_flags_of_attack_are_matched_against_attack(capsys) -> None:
    code, err = run_main(capsys, "attack", "--model", "m", "--eps-rel", "0.1", "--stpes", "5")
    assert code == 2 and err.startswith("usage: smoothrecon attack")
    last = err.splitlines()[-1]
    assert "unrecognized arguments: --stpes 5" in last and "did you mean --steps?" in last


def test_several_unknown_flags_each_get_a_suggestion(capsys) -> None:
    code, err = run_main(capsys, "evaluate", "--modle", "m", "--eps-rle", "0.1", "--out", "x")
    assert code == 2 and err.startswith("usage: smoothrecon evaluate")
    last = err.splitlines()[-1]
    assert "--model for --modle" in last and "--eps-rel for --eps-rle" in last


def test_a_top_level_flag_after_the_command_says_where_it_goes(capsys) -> None:
    code, err = run_main(capsys, "report", "R", "--debug")
    assert code == 2 and "--debug goes before the command" in err


def test_a_missing_required_flag_is_still_reported(capsys) -> None:
    code, err = run_main(capsys, "train", "--sigma-f", "0.1")
    assert code == 2 and "the following arguments are required: --out" in err


def test_a_misspelled_command_gets_a_suggestion(capsys) -> None:
    code, err = run_main(capsys, "trian", "--out", "x")
    assert code == 2 and "did you mean 'train'?" in err


def test_train_typo_as_a_user_runs_it(cli) -> None:
    """The issue's example, end to end (without the required --out, whose error must not hide
    the typo): train usage, the suggestion, exit code 2."""
    r = cli("train", "--sigam-f", "0.1")
    assert r.returncode == 2
    assert r.stdout == "" and "Traceback" not in r.stderr
    assert r.stderr.startswith("usage: smoothrecon train")
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("smoothrecon train: error: unrecognized arguments: --sigam-f 0.1")
    assert last.endswith("(did you mean --sigma-f?)")


def test_attack_eps_rel_5_as_a_user_runs_it(cli) -> None:
    r = cli("attack", "--model", "bilinear", "--eps-rel", "5", "--out", "x")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert (
        last == "smoothrecon attack: error: argument --eps-rel: expected numbers in [0, 1], got '5'"
    )
