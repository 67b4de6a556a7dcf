"""Shell completion: typer's protocol answered fast (without typer) as typer answers it, and a TAB in real bash, zsh
and fish shells, installed with ``balsamctl --install-completion``, offering the site's objects."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from balsamctl.cli import COMPLETE_VAR, verbs
from tests.cli.conftest import Called, Caller, Sites, heavy_modules

LINES = [
    "balsamctl ",
    "balsamctl g",
    "balsamctl d",
    "balsamctl zz",
    "balsamctl get ",
    "balsamctl get j",
    "balsamctl describe ",
    "balsamctl logs ",
    "balsamctl get jobs ",
    "balsamctl get jobs hel",
    "balsamctl get jobs hello-1 h",
    "balsamctl get JOBS h",
    "balsamctl get apps ",
    "balsamctl get bj ",
    "balsamctl describe job h",
    "balsamctl delete jobs ",
    "balsamctl rerun jobs hello-",
    "balsamctl get jobs --site other-site ",
    "balsamctl get jobs --site all h",
    "balsamctl get --site ",
    "balsamctl get jobs --site o",
    "balsamctl get jobs --site test-site,o",
    "balsamctl get jobs -l ",
    "balsamctl get jobs -l e",
    "balsamctl get jobs -l exp=a,",
    "balsamctl get jobs -l exp=a,t",
    "balsamctl get jobs --site other-site -l ",
    "balsamctl get -l ",
    "balsamctl delete jobs -l ",
    "balsamctl get jobs -o wide hel",
    "balsamctl get sites ",
]
HANDED_OFF = [
    "balsamctl --",
    "balsamctl get jobs -",
    "balsamctl get jobs -o ",
    "balsamctl get jobs --state ",
    "balsamctl site ",
    "balsamctl site rm ",
    "balsamctl describe jobs hello-1 ",
    "balsamctl get jobs --limit ",
    "balsamctl apply -f ",
]
SHELLS = {
    "bash": {},
    "zsh": {},
    "fish": {"_TYPER_COMPLETE_FISH_ACTION": "get-args"},
    "fish-is-args": {"_TYPER_COMPLETE_FISH_ACTION": "is-args"},
}


def request(shell: str, line: str) -> dict[str, str]:
    """The environment of the completion script of ``shell`` asking to complete ``line``."""
    name = shell.split("-")[0]
    env = {COMPLETE_VAR: f"complete_{name}", **SHELLS[shell]}
    if name == "bash":
        words = line.split()
        env |= {"COMP_WORDS": " ".join(words), "COMP_CWORD": str(len(words) - (0 if line.endswith(" ") else 1))}
    else:
        env["_TYPER_COMPLETE_ARGS"] = line
    return env


def ask(call: Caller, shell: str, line: str, *, fast: bool = True) -> Called:
    return call(fast=fast, env=request(shell, line))


FISH_LINES = ["balsamctl ", "balsamctl g", "balsamctl zz", "balsamctl get ", "balsamctl get jobs h"]
FISH_LINES += ["balsamctl get jobs --site ", "balsamctl get jobs -l ", "balsamctl get jobs -l zz"]
CASES = [(shell, line) for shell in ("bash", "zsh") for line in LINES]
CASES += [(shell, line) for shell in ("fish", "fish-is-args") for line in FISH_LINES]


@pytest.mark.parametrize(("shell", "line"), CASES)
def test_a_tab_is_answered_fast_as_typer_answers_it(sites: Sites, call: Caller, shell: str, line: str) -> None:
    quick, slow = ask(call, shell, line), ask(call, shell, line, fast=False)
    assert (quick.code, quick.out, quick.err) == (slow.code, slow.out, slow.err), (shell, line)
    assert quick.fast and not slow.fast


@pytest.mark.parametrize(("shell", "line"), [("bash", line) for line in HANDED_OFF] + [("zsh", "balsamctl --")])
def test_what_the_fast_completion_does_not_know_typer_answers(
    sites: Sites, call: Caller, shell: str, line: str
) -> None:
    quick, slow = ask(call, shell, line), ask(call, shell, line, fast=False)
    assert (quick.code, quick.out, quick.err) == (slow.code, slow.out, slow.err), (shell, line)
    assert not quick.fast


def test_the_answers_are_the_sites_objects(sites: Sites, call: Caller) -> None:
    def bash(line: str) -> list[str]:
        return ask(call, "bash", line).out.split()

    assert bash("balsamctl get ") == ["apps", "jobs", "batchjobs", "sites", "events"]
    assert bash("balsamctl g") == ["get"]
    assert bash("balsamctl get jobs ") == ["hello-1", "hello-2", "hello-3"]
    assert bash("balsamctl get jobs --site other-site ") == ["elsewhere", "hello-1"]
    assert bash("balsamctl get jobs --site all e") == ["elsewhere"]
    assert bash("balsamctl get apps ") == ["hello"]
    assert bash("balsamctl get jobs --site ") == ["other-site", "test-site", "all", "active", "this"]
    assert bash("balsamctl get jobs --site test-site,o") == ["test-site,other-site"]
    assert bash("balsamctl site rm ") == ["other-site", "test-site"]
    assert bash("balsamctl get jobs -l ") == ["exp=", "tier="]
    assert bash("balsamctl get jobs -l exp=a,") == ["exp=a,exp=", "exp=a,tier="]
    assert bash("balsamctl get apps -l ") == ["team="]
    zsh = ask(call, "zsh", "balsamctl d").out
    assert zsh.startswith('_arguments \'*: :(("delete":"Delete objects') and '"diff":' in zsh
    assert ask(call, "fish", "balsamctl get jobs h").out == "hello-1\nhello-2\nhello-3\n"
    assert ask(call, "fish-is-args", "balsamctl get jobs h").code == 0
    assert ask(call, "fish-is-args", "balsamctl get jobs zz").code == 1


def test_a_site_not_yet_vouched_for_is_read_in_full_once(sites: Sites, call: Caller) -> None:
    (sites.main.path / "settings.yml").write_text((sites.main.path / "settings.yml").read_text() + "\n")
    assert ask(call, "bash", "balsamctl get jobs ").out.split() == ["hello-1", "hello-2", "hello-3"]
    assert call("get", "jobs", "-o", "name").fast  # the TAB validated and recorded the settings


def test_a_tab_imports_no_typer_sqlalchemy_pydantic_or_yaml(sqlite_sites: Sites) -> None:
    assert heavy_modules([], request("bash", "balsamctl get jobs h")) == []
    assert heavy_modules([], request("zsh", "balsamctl ")) == []


def test_nothing_to_offer_outside_a_site(sites: Sites, call: Caller, tmp_path: Path) -> None:
    os.chdir(tmp_path)
    quick, slow = ask(call, "bash", "balsamctl get jobs "), ask(call, "bash", "balsamctl get jobs ", fast=False)
    assert quick.out == slow.out == "\n" and quick.err == slow.err == ""


# ---------------------------------------------------------------- real shells


def need(program: str) -> str:
    """The path of ``program``; the test fails without it in CI (scripts/setup.sh installs it), else is skipped."""
    path = shutil.which(program)
    if path is None:
        message = f"{program} is not installed (scripts/setup.sh installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


class Pane:
    """An interactive shell in a tmux pane of a private tmux server."""

    def __init__(self, socket: Path, command: list[str], env: dict[str, str], cwd: Path) -> None:
        self.tmux = [need("tmux"), "-S", str(socket)]
        shell_env = [f"{k}={v}" for k, v in env.items()]
        subprocess.run(
            [
                *self.tmux,
                "new-session",
                "-d",
                "-x",
                "200",
                "-y",
                "50",
                "-c",
                str(cwd),
                "env",
                "-i",
                *shell_env,
                *command,
            ],
            check=True,
            timeout=30,
        )

    def keys(self, *keys: str) -> None:
        """Type ``keys`` (tmux key names: ``Tab``, ``Enter``, ``C-c``; anything else literally)."""
        for key in keys:
            literal = [] if key in ("Tab", "Enter", "C-c") else ["-l"]
            subprocess.run([*self.tmux, "send-keys", *literal, "--", key], check=True, timeout=30)
            time.sleep(0.3)

    def text(self) -> str:
        """What the pane shows."""
        return subprocess.run([*self.tmux, "capture-pane", "-p"], capture_output=True, text=True, timeout=30).stdout

    def wait_for(self, *words: str, timeout: float = 30) -> str:
        """The pane's text once it shows every word of ``words``; fails after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            shown = self.text()
            if all(w in shown for w in words):
                return shown
            if time.monotonic() > deadline:
                pytest.fail(f"the pane never showed {words}:\n{shown}")
            time.sleep(0.2)

    def close(self) -> None:
        subprocess.run([*self.tmux, "kill-server"], capture_output=True, timeout=30)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir(mode=0o700)
    return path


def shell_env(home: Path) -> dict[str, str]:
    """A clean environment for an interactive shell that finds this balsamctl."""
    return {
        "HOME": str(home),
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "TERM": "xterm-256color",
        "BALSAMCTL_CONFIG": os.environ["BALSAMCTL_CONFIG"],
        "LANG": "C.UTF-8",
    }


@pytest.fixture
def pane_factory(tmp_path: Path) -> Iterator[list[Pane]]:
    panes: list[Pane] = []
    yield panes
    for pane in panes:
        pane.close()


INTERACTIVE = {"bash": ["bash", "-i"], "zsh": ["zsh", "-i"], "fish": ["fish", "-i"]}


@pytest.mark.parametrize("shell", INTERACTIVE)
def test_a_tab_in_a_real_shell_offers_the_sites_jobs(
    sqlite_sites: Sites, home: Path, tmp_path: Path, pane_factory: list[Pane], shell: str
) -> None:
    """``balsamctl --install-completion`` in the shell, then, in a new interactive shell, ``balsamctl get jobs``
    and TAB shows the Jobs of the site the shell stands in."""
    need(shell)
    env = shell_env(home)
    installed = subprocess.run(
        [shell, "-c", "balsamctl --install-completion; true"],  # "; true": the shell is its parent, not exec'd
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert installed.returncode == 0, installed.stderr
    assert f"{shell} completion installed" in installed.stdout
    pane = Pane(tmp_path / "tmux.sock", INTERACTIVE[shell], env, sqlite_sites.main.path)
    pane_factory.append(pane)
    time.sleep(1.0)  # the shell starts and reads its rc files
    pane.keys("balsamctl get jobs hel", "Tab", "Tab", "Tab")  # the first TAB completes "hello-", the next list
    shown = pane.wait_for("balsamctl get jobs hello-", "hello-2", "hello-3")
    assert "elsewhere" not in shown  # another site's Job


def test_a_tab_in_bash_with_the_shown_script(
    sqlite_sites: Sites, home: Path, tmp_path: Path, pane_factory: list[Pane]
) -> None:
    """``--show-completion`` prints the script: sourced in ``bash --norc -i``, TAB completes verbs, kinds, names,
    sites and label keys."""
    env = shell_env(home)
    script = home / "balsamctl.bash"
    shown = subprocess.run(["bash", "-c", "balsamctl --show-completion"], env=env, capture_output=True, text=True)
    assert "complete -o default -F _balsamctl_completion balsamctl" in shown.stdout, shown.stderr
    script.write_text(shown.stdout)
    pane = Pane(tmp_path / "tmux.sock", ["bash", "--norc", "-i"], env, sqlite_sites.main.path)
    pane_factory.append(pane)
    pane.keys(f"source {script}", "Enter", "clear", "Enter")
    pane.keys("balsamctl desc", "Tab", "j", "Tab", "hello-", "Tab", "Tab")
    pane.wait_for("balsamctl describe jobs hello-", "hello-1", "hello-3")
    pane.keys("C-c", "clear", "Enter", "balsamctl get jobs --site oth", "Tab", "-l ex", "Tab")
    pane.wait_for("balsamctl get jobs --site other-site -l exp=")


def test_the_line_reader_knows_each_verbs_options_and_arguments() -> None:
    """The options :func:`complete.parse_line` reads on a verb's line are that verb's options taking a value, its
    verbs with one NAME take one, and every kind word offered is one ``get`` takes."""
    import typer

    from balsamctl.cli import complete
    from balsamctl.schemas import kind_of

    root = typer.main.get_command(verbs.build())
    for verb, options in complete.VALUE_OPTIONS.items():
        command = root.commands[verb]  # type: ignore[attr-defined]
        params = {opt: p for p in command.params for opt in p.opts}
        for option in options:
            assert option in params and not getattr(params[option], "is_flag", True), (verb, option)
        names = [p for p in command.params if p.name in ("name", "names")]
        assert [p.nargs for p in names] == ([1] if verb in complete.ONE_NAME else [-1]), verb
        for word in complete.KIND_WORDS[verb]:
            assert word in ("sites", "events") or kind_of(word), (verb, word)
