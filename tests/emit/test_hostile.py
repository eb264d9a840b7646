"""Hostile strings in every string-valued field of a recipe: rejected with a clear error, or emitted harmlessly.

No value from a spec reaches a shell unquoted. Each case extends specs/tiny.toml (by relative path) with a
TOML snippet or `--set` overrides that put quotes, `$(...)`, backticks, `${HOME}`, `;`, `&&`, `|`, `>`,
newlines, CR, tabs, `../` paths, 5,000-character values, non-ASCII, `#`, `*` globs or a leading `-` into one
field, or names the spec file itself that way. Exactly one of:

- rejected: `olmo2spec build` and `check` return 2 with a located error (`file:line:col: error[E0..]: field:
  message`) and a hint, no traceback, and nothing is written;
- emitted harmlessly: the bundle builds without writing outside its directory; every `.sh`/`.sbatch` passes
  `bash -n`, every stage entry compiles; the dry runs of launch/local.sh, launch/submit.sh, eval/olmes.sh and
  every launch/slurm/*.sbatch exit 0 with cwd and HOME in a temp dir, with fake `sbatch`, `srun`, `scontrol`,
  `olmes`, `python3` and `nvidia-smi` first on PATH that log their calls: no file named PWNED appears, nothing
  is written, no fake is called (but `nvidia-smi -L`, local.sh's device probe, which runs in dry runs too).
  Environment values printed by the dry runs (`export NAME=...`) read back exactly, with `shlex.split` and
  with bash; a real (non-dry) run of `launch/local.sh prepare` hands them to the fake python byte-exact.
  Free text (descriptions) appears only in README.md and plan.json (and MANIFEST.json, which records
  `--set` overrides verbatim); data values (paths, text_field, ...) only in plan.json and mix tables.

To add a case: an entry in CASES naming the field it attacks; `test_every_string_field_is_attacked` fails
when a recipe gains a string field that no case attacks.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import typing
from dataclasses import dataclass, field
from pathlib import Path

import attrs
import pytest

from olmo2spec.cli import main
from olmo2spec.kinds import spec_classes
from olmo2spec.spec.cluster import RESERVED_ENV, ClusterSpec
from olmo2spec.spec.recipe import Recipe

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "specs" / "tiny.toml"
TEMPLATES = ROOT / "olmo2spec" / "emit" / "templates"
FAKE_TOOLS = ("sbatch", "srun", "scontrol", "olmes", "python3", "nvidia-smi")
BASH = shutil.which("bash") or "/bin/bash"

# -- payloads --------------------------------------------------------------------------------------------------
SUBST = "$(touch PWNED)"
TICKS = "`touch PWNED`"
QUOTES = "a'b\"c"
HOME_VAR = "${HOME}"
SEMI = "x; touch PWNED"
AND = "x && touch PWNED"
PIPE = "x | touch PWNED"
REDIR = "x > PWNED"
GLOB = "*"
HASH = "# not a comment"
DASH = "-rf --dry-run=0"
UNICODE = "ünï©ødé 🚀 ∑ 漢字"
CR = "a\rb"
TAB = "a\tb"
ESC = "\x1b[31mred\x1b[0m \x7f"
BACKSLASH = "a\\ b\\"
PRINTF = "%s %n %% %q \\n"
UP = "../../etc/passwd"
LONG = ("$(touch PWNED);`touch PWNED`'\"\\ ü\t" * 200)[:5000]
EVERYTHING = "\n".join([SUBST, TICKS, QUOTES, HOME_VAR, SEMI, AND, PIPE, REDIR, GLOB, HASH, DASH, UNICODE, CR,
                        TAB, UP, "```", '"""'])


def key(text: str) -> str:
    """A key as error messages show it in a dotted field: bare, or quoted with TOML's escapes, cut at 60."""
    if not re.fullmatch(r"[A-Za-z0-9_-]+", text):
        text = q(text)
    return text if len(text) <= 60 else text[:56] + ('..."' if text.startswith('"') else "...")


def q(text: str) -> str:
    """A TOML basic string holding exactly `text` (JSON's escapes are TOML's; TOML wants DEL escaped too)."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def qs(*texts: str) -> str:
    """A TOML array of strings."""
    return "[" + ", ".join(q(text) for text in texts) + "]"


def env_table(values: dict[str, str]) -> str:
    return "[cluster.env]\n" + "".join(f"{name} = {q(value)}\n" for name, value in values.items())


def eval_stage(name: str, **extra: str) -> str:
    lines = [f"name = {q(name)}", 'kind = "eval"', 'from = "soup"', 'suite = "olmes-base"']
    lines += [f"{k} = {v}" for k, v in extra.items()]
    return "[[stages]]\n" + "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Case:
    id: str
    field: str
    """The field attacked, as a path pattern: `stages.*.dataset`, `cluster.env` (names and values)."""
    toml: str = ""
    """Appended to `extends = "<specs/tiny.toml>"`."""
    sets: tuple[str, ...] = ()
    """`--set` overrides."""
    reject: tuple[str, str] = ("", "")
    """(code, dotted field) of the expected error; empty: the case must build."""
    env: dict[str, str] = field(default_factory=dict)
    """Emitted: environment values that must reach the dry runs' exports and the process byte-exact."""
    data: tuple[str, ...] = ()
    """Emitted: strings that must be in plan.json verbatim and in no script."""
    free: tuple[str, ...] = ()
    """Emitted: markers of free text, allowed only in README.md, plan.json (MANIFEST.json for --set)."""
    spec_name: str | bytes = ""
    """The spec file's name (default `<id>.toml`); bytes for names that are not UTF-8."""
    out_name: str | None = "bundle"
    """The bundle directory under the temp dir; None: build without -o (generated/<spec stem> under cwd)."""
    shows: tuple[tuple[str, str], ...] = ()
    """Emitted: (file prefix, text) that every matching script holds, or prints in its dry run."""


def rejected(id: str, field: str, code: str, where: str, toml: str = "", sets: tuple[str, ...] = ()) -> Case:
    return Case(id=id, field=field, toml=toml, sets=sets, reject=(code, where))


CASES: list[Case] = [
    # -- [recipe] ------------------------------------------------------------------------------------------
    *(rejected(f"recipe-name-{i}", "recipe.name", "E013", "recipe.name", f"[recipe]\nname = {q(name)}\n")
      for i, name in enumerate(["tiny; touch PWNED", SUBST, "../../x", "-rf", "Tiny", "ünï", "a\nb", "",
                                "a" * 5000])),
    rejected("recipe-name-set", "recipe.name", "E013", "recipe.name", sets=("recipe.name=evil;touch PWNED",)),
    Case("recipe-description", "recipe.description",
         f"[recipe]\ndescription = '''\nFREE-TEXT-1\n{EVERYTHING.replace(chr(13), '')}'''\n", free=("FREE-TEXT-1",)),
    Case("recipe-description-long", "recipe.description",
         f"[recipe]\ndescription = {q('FREE-TEXT-2 ' + LONG)}\n", free=("FREE-TEXT-2",)),
    Case("recipe-description-set", "recipe.description", sets=(f"recipe.description={q('FREE-TEXT-3 ' + EVERYTHING)}",),
         free=("FREE-TEXT-3",)),
    # -- [[stages]]: names, descriptions, references, per-kind strings -------------------------------------
    *(rejected(f"stage-name-{i}", "stages.*.name", "E013", f"stages.{key(name)}.name",
               eval_stage(name))
      for i, name in enumerate([f"ev{SUBST}", f"ev{TICKS}", "../../etc", "-rf", "a b", "Eval", "évalué", "x" * 65,
                                LONG, "a;b", "a|b", "a>b", "a#b", "a*b", "a\nb", "a\rb"])),
    Case("stage-description-existing", "stages.*.description",
         f"[[stages]]\nname = \"pretrain\"\ndescription = {q('FREE-TEXT-4 ' + EVERYTHING)}\n", free=("FREE-TEXT-4",)),
    Case("stage-description-new", "stages.*.description",
         eval_stage("eval-extra", description=q("FREE-TEXT-5 " + LONG)), free=("FREE-TEXT-5",)),
    Case("stage-description-set", "stages.*.description",
         sets=(f"stages.soup.description={q('FREE-TEXT-6 ' + EVERYTHING)}",), free=("FREE-TEXT-6",)),
    rejected("stage-from", "stages.*.from", "E040", "stages.eval-x.from",
             eval_stage("eval-x").replace('from = "soup"', f"from = {q(SUBST)}")),
    rejected("stage-from-up", "stages.*.from", "E040", "stages.sft.from", sets=(f"stages.sft.from={q(UP)}",)),
    rejected("rlvr-value-from", "stages.*.value_from", "E040", "stages.rlvr.value_from",
             sets=('stages.rlvr.algorithm="ppo"', f"stages.rlvr.value_from={q(SUBST)}")),
    rejected("prepare-sources", "stages.*.sources", "E050", "stages.prepare.sources[0]",
             f"[[stages]]\nname = \"prepare\"\nsources = [{q(SUBST)}]\n"),
    Case("prepare-text-field", "stages.*.text_field", f"[[stages]]\nname = \"prepare\"\ntext_field = {q(EVERYTHING)}\n",
         data=(EVERYTHING,)),
    Case("prepare-text-field-long", "stages.*.text_field", sets=(f"stages.prepare.text_field={q(LONG)}",),
         data=(LONG,)),
    rejected("pretrain-mix", "stages.*.mix", "E050", "stages.pretrain.mix", sets=(f"stages.pretrain.mix={q(UP)}",)),
    rejected("microanneal-general", "stages.*.general", "E050", "stages.microanneal.general",
             sets=(f"stages.microanneal.general={q(SUBST)}",)),
    rejected("microanneal-candidates", "stages.*.candidates", "E050", "stages.microanneal.candidates[0][0]",
             sets=(f"stages.microanneal.candidates=[[{q(TICKS)}]]",)),
    rejected("soup-ingredients", "stages.*.ingredients", "E040", "stages.soup.ingredients[0]",
             sets=(f"stages.soup.ingredients=[{q(SEMI)}]",)),
    *(rejected(f"dataset-{i}", "stages.*.dataset", "E013", f"stages.{stage}.dataset",
               f"[[stages]]\nname = \"{stage}\"\ndataset = {q(name)}\n")
      for i, (stage, name) in enumerate([("sft", UP), ("dpo", SUBST), ("rlvr", "-rf"), ("sft", "a b"),
                                         ("dpo", "x\ny"), ("rlvr", LONG), ("sft", "allenai/Tulu")])),
    *(rejected(f"eval-task-{i}", "stages.*.tasks", "E013", "stages.eval-x.tasks",
               eval_stage("eval-x", tasks=f"[\"gsm8k::olmes\", {q(task)}]"))
      for i, task in enumerate(["--output-dir=/etc", "-h", SUBST, TICKS, "a b", "x\ny", "a;b", HASH, GLOB, UP,
                                QUOTES, UNICODE, "x" * 129])),
    Case("eval-tasks-olmes", "stages.*.tasks",
         eval_stage("eval-x", tasks=qs("gsm8k::olmes", "arc_challenge:mc::olmes")),
         shows=(("eval/olmes.sh", " olmo_2_generative::olmes gsm8k::olmes arc_challenge:mc::olmes --output-dir "),)),
    # -- [sources.*] and [mixes.*] ---------------------------------------------------------------------------
    *(rejected(f"source-name-{i}", "sources", "E013", f"sources.{key(name)}",
               f"[sources.{q(name)}]\ntokens = \"1M\"\npaths = [\"x\"]\n")
      for i, name in enumerate([SUBST, "../up", "-x", "Web", "dåta", "a\nb", LONG])),
    Case("source-description", "sources.*.description",
         f"[sources.demo-web]\ndescription = {q('FREE-TEXT-7 ' + EVERYTHING)}\n", free=("FREE-TEXT-7",)),
    Case("source-paths", "sources.*.paths",
         f"[sources.demo-web]\npaths = {qs('${DATA_ROOT}/' + SUBST + '/*.npy', UP, TICKS, '-rf', LONG)}\n",
         data=("${DATA_ROOT}/" + SUBST + "/*.npy", UP, TICKS, "-rf", LONG)),
    Case("source-raw", "sources.*.raw", f"[sources.demo-code]\nraw = {qs(SEMI, UNICODE, GLOB, QUOTES)}\n",
         data=(SEMI, UNICODE, QUOTES)),
    Case("source-group", "sources.*.group", f"[sources.demo-web]\ngroup = {q(REDIR + ' ' + TICKS)}\n",
         data=(REDIR + " " + TICKS,)),
    *(rejected(f"mix-name-{i}", "mixes", "E013", f"mixes.{key(name)}",
               f"[mixes.{q(name)}]\nsource_pct = {{ demo-web = 10 }}\n")
      for i, name in enumerate(["a b", "-x", TICKS, "x\ty"])),
    Case("mix-description", "mixes.*.description",
         f"[mixes.demo-anneal]\ndescription = {q('FREE-TEXT-8 ' + EVERYTHING)}\n", free=("FREE-TEXT-8",)),
    rejected("mix-source-pct", "mixes.*.source_pct", "E050", f"mixes.demo-pretrain.source_pct.{key(SUBST)}",
             f"[mixes.demo-pretrain]\nsource_pct = {{ {q(SUBST)} = 10 }}\n"),
    rejected("mix-mix-pct", "mixes.*.mix_pct", "E050", f"mixes.demo-anneal.mix_pct.{key('../x')}",
             f"[mixes.demo-anneal]\nmix_pct = {{ demo-web = 50, {q('../x')} = 50 }}\n"),
    rejected("mix-allow-repeats", "mixes.*.allow_repeats", "E050", f"mixes.demo-anneal.allow_repeats.{key(SEMI)}",
             f"[mixes.demo-anneal]\nallow_repeats = [{q(SEMI)}]\n"),
    # -- [cluster.env]: names rejected, values emitted (quoted) -----------------------------------------------
    *(rejected(f"env-name-{i}", "cluster.env", "E013", "cluster.env", f"[cluster.env]\n{q(name)} = \"1\"\n")
      for i, name in enumerate([SUBST, "A B", "a", "1X", "A-B", "A;B", "ÄX", "X\nY", "", "DRY_RUN", "PYTHON",
                                "BUNDLE_DIR", "PATH", "BASH_ENV", "IFS", "OLMO2SPEC_DEVICE", "SLURM_JOB_ID"])),
    rejected("env-name-set", "cluster.env", "E013", "cluster.env", sets=('cluster.env.DRY_RUN="0"',)),
    # values: one printable line (control characters refused); names: from the allow-list (NCCL_* and a few more)
    *(rejected(f"env-value-{i}", "cluster.env", "E013", "cluster.env", toml)
      for i, toml in enumerate([env_table({"NCCL_X": "a\nb"}), env_table({"NCCL_X": "a\x00b"}),
                                '[cluster.env]\nNCCL_X = """\nline one\n$(touch PWNED)"""\n',
                                "[cluster.env]\nNCCL_X = '''\n`touch PWNED`\n'''\n",
                                env_table({"NCCL_X": CR}), env_table({"NCCL_X": TAB}), env_table({"NCCL_X": ESC})])),
    *(Case(f"env-value-{name.lower()}", "cluster.env", env_table({f"NCCL_{name}": value}),
           env={f"NCCL_{name}": value})
      for name, value in [("SUBST", SUBST), ("TICKS", TICKS), ("QUOTES", QUOTES), ("HOME_VAR", HOME_VAR),
                          ("SEMI", SEMI), ("AND", AND), ("PIPE", PIPE), ("REDIR", REDIR), ("GLOB", GLOB),
                          ("HASH", HASH), ("DASH", DASH), ("UNICODE", UNICODE),
                          ("BACKSLASH", BACKSLASH), ("PRINTF", PRINTF), ("UP", UP), ("LONG", LONG.replace("\t", " ")),
                          ("EMPTY", ""), ("SPACES", "  "), ("DEBUG", SUBST + " " + QUOTES)]),
    Case("env-values-all", "cluster.env",
         env_table(all_env := {"NCCL_V1": SUBST, "NCCL_V2": TICKS, "NCCL_V3": "'", "NCCL_V4": '"',
                               "NCCL_V5": "\\", "NCCL_V6": "$", "NCCL_V7": "!x"}),
         env=all_env),
    Case("env-value-set", "cluster.env", sets=(f"cluster.env.NCCL_SET_BARE={AND} {SUBST}",
                                                f"cluster.env.NCCL_SET_QUOTED={q(QUOTES + TICKS)}"),
         env={"NCCL_SET_BARE": f"{AND} {SUBST}", "NCCL_SET_QUOTED": QUOTES + TICKS}),
    # -- [runtime]: a sink is one of a fixed list; a W&B project becomes a run's project name -----------------
    *(rejected(f"runtime-sink-{i}", "runtime.metrics_sinks", "E013", "runtime.metrics_sinks",
               f"[runtime]\nmetrics_sinks = [{q(value)}]\n")
      for i, value in enumerate([SUBST, "tensorboard; touch PWNED", "../x", "", QUOTES])),
    *(rejected(f"runtime-wandb-project-{i}", "runtime.wandb_project", "E013", "runtime.wandb_project",
               f"[runtime]\nmetrics_sinks = [\"wandb\"]\nwandb_project = {q(value)}\n")
      for i, value in enumerate([SUBST, "a b", UP, "a\nb", "", TICKS, "a" * 5000])),
    # -- [cluster.slurm]: every value lands on an #SBATCH line, so only plain words pass -------------------
    *(rejected(f"slurm-{option}-{i}", f"cluster.slurm.{option}", "E013", f"cluster.slurm.{option}",
               f"[cluster.slurm]\n{option} = {q(value)}\n")
      for option in ("partition", "account", "qos")
      for i, value in enumerate([SUBST, "gpu; touch PWNED", "a b", "gpu\n#SBATCH --wrap=touch", "ünï", QUOTES, UP,
                                 "x" * 3 + "\t"])),
    *(rejected(f"slurm-time-limit-{i}", "cluster.slurm.time_limit", "E013", "cluster.slurm.time_limit",
               f"[cluster.slurm]\ntime_limit = {q(value)}\n")
      for i, value in enumerate(["48:00:00 --wrap=x", "48:00:00\n#SBATCH --wrap=x", TICKS, "-1", ""])),
    *(rejected(f"slurm-extra-{i}", "cluster.slurm.extra", "E013", "cluster.slurm.extra",
               f"[cluster.slurm]\nextra = [\"--constraint=h100\", {q(value)}]\n")
      for i, value in enumerate(["--wrap=touch PWNED", f"--comment={SUBST}", "-x", "--export=A=`b`",
                                 "--comment=a\n#SBATCH --wrap=x", "--x=\"y\"", "--x='y'", "--x=a;b", "--x=#"])),
    Case("slurm-plain-words", "cluster.slurm.partition",
         '[cluster.slurm]\npartition = "gpu_a100.x:y@z%+,-"\naccount = "lab-1"\nqos = "high"\n'
         'extra = ["--constraint=h100", "--comment=a/b=c"]\n',
         shows=tuple(("launch/slurm/", f"\n#SBATCH {line}\n") for line in (
             "--partition=gpu_a100.x:y@z%+,-", "--account=lab-1", "--qos=high", "--constraint=h100",
             "--comment=a/b=c"))),
    # -- [data] ------------------------------------------------------------------------------------------------
    Case("data-root", "data.root", f"[data]\nroot = {q(HOME_VAR + '/' + SUBST + ' ' + UP)}\n",
         data=(HOME_VAR + "/" + SUBST + " " + UP,)),
    # -- values checked against a fixed list: one_of rejects anything else -------------------------------------
    *(rejected(f"enum-{setting}", path, "E013", setting, sets=(f"{setting}={value}",))
      for path, setting, value in [
          ("model.norm", "model.norm", q(SUBST)),
          ("model.init_scaling", "model.init_scaling", q(TICKS)),
          ("tokenizer.name", "tokenizer.name", q(UP)),
          ("cluster.gpu", "cluster.gpu", q(SEMI)),
          ("optimizer.name", "optimizer.name", q("-rf")),
          ("sources.*.category", "sources.demo-web.category", q(SUBST)),
          ("stages.*.filters", "stages.prepare.filters", qs(SUBST)),
          ("stages.*.activation_checkpointing", "stages.pretrain.activation_checkpointing", q(TICKS)),
          ("stages.*.fsdp_units", "stages.anneal.fsdp_units", q(SEMI)),
          ("stages.*.loss", "stages.sft.loss", q(SUBST)),
          ("stages.*.chat_template", "stages.sft.chat_template", q(QUOTES)),
          ("stages.*.algorithm", "stages.rlvr.algorithm", q(HASH)),
          ("stages.*.verifiers", "stages.rlvr.verifiers", qs(GLOB)),
          ("stages.*.kl_estimator", "stages.rlvr.kl_estimator", q(SEMI)),
          ("stages.*.suite", "stages.eval-base.suite", q(UNICODE)),
          ("stages.*.format", "stages.export.format", q(LONG)),
      ]),
    # -- the spec file's own name (and the bundle directory's) -------------------------------------------------
    Case("file-name-shell", "file name", spec_name=f"evil {SUBST} {TICKS} 'q' \"d\" ; && | > # * {UNICODE}.toml",
         out_name=f"bundle {SUBST} {TICKS} 'q' \"d\" ; & | > # * {UNICODE}",
         shows=(("launch/", f" from evil {SUBST} {TICKS} 'q' \"d\" ; && | > # * {UNICODE}.toml; do not edit.\n"),)),
    Case("file-name-newline", "file name", spec_name=f"line\nbreak {SUBST}\r\tx\n.toml",
         out_name=f"out\n{TICKS}\rx", shows=(("launch/", f" from line break {SUBST} x .toml; do not edit.\n"),)),
    Case("file-name-not-utf8", "file name", spec_name=b"bad \xff\xfe $(touch PWNED).toml",
         out_name=os.fsdecode(b"out \xff `touch PWNED`"),
         shows=(("launch/", f" from bad \\xff\\xfe {SUBST}.toml; do not edit.\n"),)),
    Case("file-name-dash-long", "file name", spec_name="-rf --dry-run " + "x" * 200 + ".toml", out_name="-o"),
    Case("file-name-default-output", "file name", spec_name=f"stem {SUBST} '{TICKS}'.toml", out_name=None),
]


def _string_fields() -> set[str]:
    """Every field of a recipe whose value (or table key) is a string, as a path pattern."""
    found: set[str] = set()

    def mentions_str(t: typing.Any) -> bool:
        return t is str or any(mentions_str(arg) for arg in typing.get_args(t))

    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for attribute in attrs.fields(cls):
            name = str(attribute.metadata.get("key", attribute.name))
            path = f"{prefix}{name}"
            hint = hints[attribute.name]
            args = typing.get_args(hint)
            if typing.get_origin(hint) is dict and attrs.has(args[1]):
                found.add(path)  # the table's keys are names
                walk(args[1], f"{path}.*.")
            elif path == "stages":
                continue  # each kind's fields, below
            elif isinstance(hint, type) and attrs.has(hint):
                walk(hint, f"{path}.")
            elif mentions_str(hint):
                found.add(path)

    walk(Recipe, "")
    for stage in spec_classes().values():
        walk(stage, "stages.*.")
    return found - {"stages.*.kind"}


def test_every_string_field_is_attacked() -> None:
    attacked = {case.field for case in CASES}
    missing = _string_fields() - attacked
    assert not missing, f"string fields no hostile case covers: {sorted(missing)}"
    assert len({case.id for case in CASES}) == len(CASES)


def test_reserved_env_names_cover_the_scripts() -> None:
    """Every upper-case variable the shell templates use is one a recipe's [cluster.env] cannot set."""
    attribute = attrs.fields(ClusterSpec).env
    used: set[str] = set()
    for template in [*TEMPLATES.glob("*.sh.j2"), *TEMPLATES.glob("*.sbatch.j2")]:
        text = re.sub(r"\{\{.*?\}\}|\{%.*?%\}", " ", template.read_text())
        text = re.sub(r"(?m)(^|\s)#(\s.*)?$", " ", text)  # comments
        for match in re.finditer(r"\$\{?([A-Z_][A-Z0-9_]*)|\b([A-Z_][A-Z0-9_]*)=|setenv ([A-Z_][A-Z0-9_]*)", text):
            used.add(next(g for g in match.groups() if g))
    assert {"DRY_RUN", "PYTHON", "BUNDLE_DIR"} <= used
    allowed = {"CHECKPOINT_ROOT"}  # a recipe may put checkpoints elsewhere; the scripts quote it
    for name in sorted(used - allowed):
        with pytest.raises(ValueError, match="cannot set it"):
            attribute.validator(None, attribute, {name: "1"})  # type: ignore[misc]
            pytest.fail(f"{name} is used by the scripts, yet [cluster.env] may set it")
    for name in sorted(RESERVED_ENV):
        with pytest.raises(ValueError, match="cannot set it"):
            attribute.validator(None, attribute, {name: "1"})  # type: ignore[misc]


# -- running a case ----------------------------------------------------------------------------------------------
LOCATED = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): (?P<severity>error|warning)\[(?P<code>[EW]\d{3})\]: "
                     r"(?P<rest>.*)$")


def _snapshot(root: Path, skip: Path) -> dict[str, str]:
    """Every path under `root` (but `skip`), with a hash of each file's bytes ("" for directories)."""
    out: dict[str, str] = {}
    for directory, dirs, files in os.walk(root):
        here = Path(directory)
        dirs[:] = [name for name in dirs if here / name != skip]
        for name in dirs:
            out[os.path.relpath(here / name, root)] = ""
        for name in files:
            out[os.path.relpath(here / name, root)] = hashlib.sha256((here / name).read_bytes()).hexdigest()
    return out


def _pwned(root: Path) -> list[str]:
    return [os.path.relpath(os.path.join(d, n), root) for d, dirs, files in os.walk(root) for n in dirs + files
            if n == "PWNED"]


def _fake_tools(bin_dir: Path, log: Path, env_names: list[str], got: Path) -> None:
    bin_dir.mkdir()
    for tool in FAKE_TOOLS:
        record = f"{{ printf '%s' {tool}; printf ' %q' \"$@\"; printf '\\n'; }} >> {shlex.quote(str(log))}"
        lines = ["#!/bin/bash", record]
        if tool == "python3":  # the process a stage starts: what does it see of the environment?
            lines += [f"printf '%s' \"${{{name}}}\" > {shlex.quote(str(got / name))}" for name in env_names]
        lines.append("exit 1" if tool == "nvidia-smi" else "exit 0")  # no GPUs: the CPU path
        path = bin_dir / tool
        path.write_text("\n".join(lines) + "\n")
        path.chmod(0o755)


def _bash(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([BASH, *args], cwd=cwd, env=env, capture_output=True, timeout=60, check=False)


def _text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def _strings(node: typing.Any) -> typing.Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)


def _read_back(line: str, name: str, cwd: Path, env: dict[str, str]) -> str:
    """The value a shell gets from a printed `export NAME=...` line (checked to execute nothing)."""
    result = _bash(["-c", 'eval "$1"; printf "%s" "${!2}"', "_", line, name], cwd, env)
    assert result.returncode == 0, _text(result.stderr)
    return _text(result.stdout)


def _check_rejected(case: Case, spec: Path, tmp: Path, out: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = _snapshot(tmp, tmp / "tools")
    sets = [arg for s in case.sets for arg in ("--set", s)]
    for argv in (["check", str(spec), *sets], ["build", str(spec), "-o", str(out), *sets]):
        status = main(argv)
        captured = capsys.readouterr()
        err = captured.err
        assert status == 2, f"{argv[0]} returned {status}: {err}"
        assert "Traceback" not in err and "internal error" not in err, err
        lines = err.splitlines()
        assert re.fullmatch(r"\d+ errors?, \d+ warnings?", lines[-1]), err
        code, where = case.reject
        hits = []
        for i, line in enumerate(lines[:-1]):
            assert len(line) < 400, f"an unreadable error line: {line[:200]}..."
            m = LOCATED.match(line)
            if m is None:
                assert line.startswith("  hint: "), f"unexpected stderr line {line!r}:\n{err}"
                continue
            # the base recipe's own not-yet-runnable stages (W301) are the only diagnostics elsewhere
            assert m["file"] in (str(spec), "--set") or m["code"] == "W301", line
            if m["severity"] == "error" and m["code"] == code and m["rest"].startswith(f"{where}: "):
                hits.append(i)
        assert hits, f"no error[{code}] for {where!r}:\n{err}"
        # the hint says how to fix it; a value outside a fixed list is told the list in the message itself
        assert any(lines[i + 1].startswith("  hint: ") or "must be one of" in lines[i] for i in hits), err
    assert not out.exists()
    assert _snapshot(tmp, tmp / "tools") == before, "a rejected recipe wrote something"
    assert not _pwned(tmp)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                 capsys: pytest.CaptureFixture[str]) -> None:
    tmp = tmp_path
    work = tmp / "work"  # cwd and HOME of everything run: where `touch PWNED` would land
    work.mkdir()
    specs = tmp / "specs"
    specs.mkdir()
    name = case.spec_name or f"{case.id}.toml"
    spec = specs / os.fsdecode(name)
    try:
        spec.write_text(f"extends = {q(os.path.relpath(TINY, specs))}\n{case.toml}", encoding="utf-8")
    except (OSError, UnicodeEncodeError):  # a file system that refuses the name: nothing to test
        pytest.skip(f"this file system cannot name a file {name!r}")
    out = tmp / case.out_name if case.out_name is not None else work / "generated" / spec.stem
    monkeypatch.chdir(work)

    if case.reject[0]:
        _check_rejected(case, spec, tmp, out, capsys)
        return

    # -- build: succeeds, writes only the bundle directory ----------------------------------------------------
    before = _snapshot(tmp, tmp / "tools")
    sets = [arg for s in case.sets for arg in ("--set", s)]
    argv = ["build", str(spec), *sets] + (["-o", str(out)] if case.out_name is not None else [])
    status = main(argv)
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "Traceback" not in captured.err
    assert out.is_dir()
    built = _snapshot(tmp, tmp / "tools")
    out_rel = os.path.relpath(out, tmp)
    for path in set(before) | set(built):
        if before.get(path) != built.get(path):
            inside = path == out_rel or path.startswith(out_rel + os.sep)
            parent = built.get(path) == "" and out_rel.startswith(path + os.sep)
            assert inside or parent, f"build wrote outside the bundle: {path!r}"

    files = {os.path.relpath(p, out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    scripts = sorted(n for n in files if n.endswith((".sh", ".sbatch")))
    assert "launch/local.sh" in scripts and "eval/olmes.sh" in scripts and len(scripts) >= 4

    # -- no description in any file but README.md / plan.json; data only as data ------------------------------
    may_hold_text = {"README.md", "plan.json"} | ({"MANIFEST.json"} if case.sets else set())
    for marker in case.free:
        holders = {n for n, data in files.items() if marker.encode() in data}
        assert holders and holders <= may_hold_text, f"{marker} in {sorted(holders - may_hold_text)}"
    plan_strings = set(_strings(json.loads(files["plan.json"])))
    for value in case.data:
        assert value in plan_strings, f"{value[:60]!r} is not in plan.json verbatim"
        leaks = [n for n in files if n.endswith((".sh", ".sbatch", ".py")) and value.encode() in files[n]]
        assert not leaks, f"{value[:60]!r} in {leaks}"
    for entry in (n for n in files if n.endswith(".py")):
        compile(files[entry], entry, "exec")  # a hostile spec name in a comment must not break the entry

    # -- every script parses; dry runs run nothing ----------------------------------------------------------
    tools = tmp / "tools"
    tools.mkdir()
    log, got = tools / "calls.log", tools / "got"
    got.mkdir()
    _fake_tools(tools / "bin", log, sorted(case.env), got)
    path = os.pathsep.join([str(tools / "bin"), os.path.dirname(BASH), "/usr/bin", "/bin"])
    env = {"PATH": path, "HOME": str(work), "LC_ALL": "C.UTF-8"}
    for script in scripts:
        result = _bash(["-n", str(out / script)], work, env)
        assert result.returncode == 0, f"bash -n {script}: {_text(result.stderr)}"
    for script in ("launch/local.sh", "launch/submit.sh", "eval/olmes.sh"):
        result = _bash([str(out / script), "--help"], work, env)
        assert result.returncode == 0 and _text(result.stdout).startswith("usage: "), _text(result.stdout)
    outputs: dict[str, str] = {}
    dry = [s for s in scripts if s.startswith("launch/slurm/")] + ["launch/local.sh", "launch/submit.sh",
                                                                    "eval/olmes.sh"]
    for script in dry:
        result = _bash([str(out / script), "--dry-run"], work, env)
        assert result.returncode == 0, f"{script} --dry-run: {_text(result.stderr)}"
        outputs[script] = _text(result.stdout)
    calls = log.read_text().splitlines() if log.exists() else []
    assert set(calls) <= {"nvidia-smi -L"}, f"dry runs called: {calls}"
    assert not _pwned(tmp), "a payload ran"
    assert _snapshot(tmp, tools) == built, "a dry run wrote something"
    for prefix, text in case.shows:
        matching = [n for n in scripts if n.startswith(prefix)]
        assert matching, prefix
        for n in matching:
            assert text in _text(files[n]) or text in outputs.get(n, ""), f"{n} lacks {text!r}"

    # -- environment values: printed quoted, read back exactly --------------------------------------------------
    exporting = [s for s in dry if s == "launch/local.sh" or s.endswith(".sbatch")]
    for var, value in case.env.items():
        for script in exporting:
            lines = [line for line in outputs[script].splitlines() if line.startswith(f"export {var}=")]
            assert len(lines) == 1, f"{script}: {len(lines)} export lines for {var}"
            line = lines[0]
            if "$'" not in line:  # bash's %q writes $'...' for control characters; shlex cannot read that
                assert shlex.split(line) == ["export", f"{var}={value}"], script
            assert _read_back(line, var, work, env) == value, script
    assert not _pwned(tmp), "reading the exports back ran a payload"

    # -- and a real run hands them to the process byte-exact -------------------------------------------------
    if case.env:
        run_env = {**env, "PYTHON": str(tools / "bin" / "python3")}
        result = _bash([str(out / "launch/local.sh"), "prepare"], work, run_env)
        assert result.returncode == 0, _text(result.stderr)
        for var, value in case.env.items():
            assert (got / var).read_bytes() == value.encode(), var
        assert sum(line.startswith("python3 ") for line in log.read_text().splitlines()) == 2
        assert not _pwned(tmp), "a payload ran"
