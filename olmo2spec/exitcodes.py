"""Every exit status olmo2spec gives: the CLI, the runtime's entry points, every stage runner, the launchers.

One table, so that a script (or SLURM) can tell "fix the recipe" from "fix the node" from "fix the data".
The README's table is `markdown_table()`, checked by a test.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["ExitCode", "MEANINGS", "markdown_table"]


class ExitCode(IntEnum):
    OK = 0
    DIFFERENT = 1
    USAGE = 2
    PREFLIGHT = 3
    NOT_RUNNABLE = 4
    NONFINITE = 5
    DATA = 6
    CHECKPOINT = 7
    INTERNAL = 70  # sysexits.h EX_SOFTWARE
    IO = 74  # sysexits.h EX_IOERR
    INTERRUPTED = 130  # 128 + SIGINT, the shell's convention for Ctrl-C
    READER_GONE = 141  # 128 + SIGPIPE, the shell's convention for `cmd | head -1`


MEANINGS: dict[ExitCode, str] = {
    ExitCode.OK: "done (a training run stopped on request near its time limit too: it saved a checkpoint and "
                 "resumes from it)",
    ExitCode.DIFFERENT: "`diff --exit-code`: the plans differ. Also torchrun's status when a training process "
                        "failed, whatever that process's own (which its log shows as `exitcode`)",
    ExitCode.USAGE: "a wrong recipe, argument, option or bundle (a spec error): nothing ran; the message says what "
                    "to fix",
    ExitCode.PREFLIGHT: "this node failed its preflight (a GPU's matrix multiply, disk space, an unwritable "
                        "checkpoint directory): run the stage elsewhere",
    ExitCode.NOT_RUNNABLE: "this runtime cannot run the stage's kind yet, or a package it needs (torch, a metrics "
                           "sink's) is not installed",
    ExitCode.NONFINITE: "the loss or gradient norm was not finite: the run stopped without saving that state "
                        "(lower the learning rate or check the data, then rerun: it resumes from the last good "
                        "checkpoint)",
    ExitCode.DATA: "data missing or malformed: `DATA_ROOT` unset, no raw or token files, a malformed line, token "
                   "counts far from the declared ones, an eval file missing",
    ExitCode.CHECKPOINT: "a checkpoint missing, unfinished, damaged or not of the plan's model (run the stage that "
                         "makes it first, or rerun the damaged one)",
    ExitCode.INTERNAL: "a bug in olmo2spec (rerun with `OLMO2SPEC_DEBUG=1` for a traceback and report it)",
    ExitCode.IO: "the machine's: a full disk, no permission",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C); a training run resumes from its latest checkpoint when rerun",
    ExitCode.READER_GONE: "the reader of stdout went away (`head -1` after `explain`): quietly, as SIGPIPE would",
}


def markdown_table() -> str:
    """The table of exit statuses as the README shows it."""
    rows = [f"| {int(code)} | `{code.name}` | {MEANINGS[code]} |" for code in ExitCode]
    return "\n".join(["| status | name | meaning |", "|---|---|---|", *rows]) + "\n"
