"""Every command line leptonctl sends reads the same in every login shell.

sshd hands the line to the user's login shell (`$SHELL -c LINE`): bash, dash, zsh, tcsh, csh
or fish, which quote differently (tcsh expands `!` and refuses newlines between single
quotes and has no `${x:-y}`; fish takes `\\` and `\'` as escapes there).  Each form below is
run through each installed shell with a stand-in for /bin/sh that records its argv: all
shells must hand /bin/sh the same script, the one leptonctl meant.  Then the real thing:
the agent installed and run, exec snippets, the process-group kill, and rc files that print
on stdout and stderr before the command (a chatty .cshrc, .bashrc, .zshenv, config.fish).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from agent.lepton_agent import keys
from leptonctl.inventory.model import Host
from leptonctl.remote import agent as agent_mod
from leptonctl.remote.ssh import after_boundary, skip_preamble, with_boundary
from leptonctl.remote.transport import (
    group_command,
    kill_group_command,
    sh_line,
)

SHELLS = [s for s in ("bash", "dash", "zsh", "tcsh", "csh", "fish") if shutil.which(s)]
MARKER = b"leptonctl-output-0123456789abcdef"

# snippets as users write them for `exec`, and the awkward characters of each shell
SNIPPETS = [
    "echo a 2>&1 | cat",
    "uname -s",
    'd=${XDG_CACHE_HOME:-$HOME/.cache}; echo "$d" >&2',
    "x='it''s'; printf '%s!\\t\"q\"\\n' \"$x\"\necho $((1+2)) `echo back`",
    "echo !! !$ ^a^b \\\\ \\' ~ * {a,b} %s %% $# ü 'a  b'",
    "cat <<'EOF'\nline one\n  two\t!\nEOF\n",
    "",
]


def _host(python: str = "python3", data_dir: str | None = "/srv/lepton data") -> Host:
    return Host(
        name="h1",
        address="10.0.0.1",
        port=None,
        user=None,
        identity_file=None,
        connection="ssh",
        python=python,
        data_dir=data_dir,
        groups=("all",),
        vars={},
        capacity=None,
        source="test",
    )


def forms() -> dict[str, str]:
    """Every sh script an SSH connection sends (each as ``with_boundary`` sends it)."""
    host = _host()
    found = {
        "agent probe": agent_mod.agent_command(host, ["probe"]),
        "agent serve": agent_mod.agent_command(host, ["serve"]),
        "agent python with a space": agent_mod.agent_command(_host("/opt/my py/python3"), ["x"]),
        "installer": agent_mod.installer_command(host),
        "presence": agent_mod.presence_command(host),
        "kill group": kill_group_command(4242),
        "reconcile ping": "true",
    }
    for i, snippet in enumerate(SNIPPETS):
        found[f"exec {i}"] = group_command("python3", snippet)
        found[f"plain {i}"] = snippet
    return found


@pytest.fixture(scope="module")
def recorder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stand-in for /bin/sh: prints its argv as JSON."""
    path = tmp_path_factory.mktemp("recorder") / "argv"
    path.write_text(
        f"#!{sys.executable}\nimport json, sys\nsys.stdout.write(json.dumps(sys.argv[1:]))\n"
    )
    path.chmod(0o755)
    return path


def shell_env(home: Path) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "HOME": str(home), "LC_ALL": "C.UTF-8"}


def script_seen(text: str) -> str:
    """What /bin/sh runs for the ``-c`` text of an ``sh_line``: itself, or the script that
    its printf decodes (printed instead of evaluated)."""
    prefix = 'eval "$(printf "'
    if not text.startswith(prefix):
        return text
    assert text.endswith('")"')
    decode = 'printf %s "$(printf "' + text[len(prefix) :]
    done = subprocess.run(["/bin/sh", "-c", decode], capture_output=True, check=True)
    return done.stdout.decode("utf-8", "surrogateescape")


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("name", sorted(forms()))
def test_every_login_shell_hands_bin_sh_the_same_script(
    shell: str, name: str, recorder: Path, tmp_path: Path
) -> None:
    script = forms()[name]
    line = with_boundary(MARKER, script)
    assert line.startswith("exec /bin/sh -c '")
    spied = line.replace("exec /bin/sh -c ", f"exec {recorder} -c ", 1)
    done = subprocess.run(
        [shell, "-c", spied], capture_output=True, env=shell_env(tmp_path), timeout=30
    )
    assert done.returncode == 0, done.stderr
    argv = json.loads(done.stdout)
    assert argv[0] == "-c" and len(argv) == 2
    word = MARKER.decode()
    expected = f"echo {word}; echo {word} >&2; {script}"
    # command substitution drops trailing newlines, which change nothing in a script
    assert script_seen(argv[1]) == expected.rstrip("\n")


@pytest.mark.parametrize(
    "script",
    [*SNIPPETS, "printf '\\001\\177'", "echo \udcff", "a\tb\x01"],
)
def test_the_agent_builds_the_same_lines_as_the_operator(script: str) -> None:
    assert keys.sh_line(script) == sh_line(script)


def test_a_line_holds_only_what_every_shell_leaves_alone_between_single_quotes() -> None:
    for script in [*SNIPPETS, *forms().values()]:
        line = sh_line(script)
        inner = line[len("exec /bin/sh -c '") : -1]
        assert line.endswith("'")
        assert not set(inner) & set("'!\n") and all(" " <= c <= "~" for c in inner)
        # a backslash only ever starts an octal escape: never `\\` or `\'` (fish's escapes)
        assert "\\\\" not in inner and all(
            inner[i + 1 : i + 4].isdigit() for i, c in enumerate(inner) if c == "\\"
        )


def test_a_forced_command_is_plain_and_runs_the_agents_own_interpreter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    line = keys.forced_command("/var/tmp/lepton", "xfer-1")
    assert '"' not in line  # authorized_keys holds it between double quotes
    assert line == sh_line(
        f"exec {sys.executable} {keys.payload_dir()} recv --transfer xfer-1 "
        "--data-dir /var/tmp/lepton"
    )
    from agent.lepton_agent.wire import BadRequest

    with pytest.raises(BadRequest, match="not usable in a forced command"):
        keys.forced_command("/var/tmp/it's", "xfer-1")
    monkeypatch.setattr(sys, "executable", "/opt/py 3/bin/python3")
    with pytest.raises(BadRequest, match="not usable in a forced command"):
        keys.forced_command("/var/tmp/lepton", "xfer-1")


@pytest.mark.parametrize("shell", SHELLS)
def test_exec_snippets_run_under_bin_sh_in_any_login_shell(shell: str, tmp_path: Path) -> None:
    for snippet in SNIPPETS:
        expected = subprocess.run(
            ["/bin/sh", "-c", snippet], capture_output=True, env=shell_env(tmp_path)
        )
        for leader in (True, False):  # sshd's shell leads its group; elsewhere: the wrapper
            line = with_boundary(MARKER, group_command(sys.executable, snippet))
            proc = subprocess.Popen(
                [shell, "-c", line],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=shell_env(tmp_path),
                start_new_session=leader,
            )
            stdout, stderr = proc.communicate(timeout=30)
            marker, pgid, out = stdout.split(b"\n", 2)
            # the login shell exec'd /bin/sh (and that the wrapper, or the snippet's sh): one
            # pid all along, leading a group of its own either way
            assert (marker, int(pgid)) == (MARKER, proc.pid), stdout
            assert (proc.returncode, out) == (expected.returncode, expected.stdout), snippet
            assert after_boundary(stderr, MARKER) == expected.stderr, snippet


@pytest.mark.parametrize("shell", SHELLS)
def test_scripts_run_under_bin_sh_in_any_login_shell(shell: str, tmp_path: Path) -> None:
    for script in [*SNIPPETS, "exit 7", 'echo $0; printf %s "$*" >&2']:
        expected = subprocess.run(
            ["/bin/sh", "-c", script], capture_output=True, env=shell_env(tmp_path)
        )
        line = with_boundary(MARKER, script)
        done = subprocess.run(
            [shell, "-c", line], capture_output=True, env=shell_env(tmp_path), timeout=30
        )
        assert done.returncode == expected.returncode, script
        assert asyncio.run(skipped(done.stdout)) == expected.stdout, script
        assert after_boundary(done.stderr, MARKER) == expected.stderr, script


@pytest.mark.parametrize("shell", SHELLS)
def test_the_group_kill_line_kills_the_group_in_any_login_shell(shell: str, tmp_path: Path) -> None:
    victim = subprocess.Popen(["sleep", "300"], start_new_session=True)
    line = sh_line(kill_group_command(victim.pid))
    killed = subprocess.run([shell, "-c", line], env=shell_env(tmp_path), timeout=30)
    assert killed.returncode == 0 and victim.wait(timeout=10) == -signal.SIGKILL


CHATTY_RC = {  # rc files each shell reads for `SHELL -c LINE`, printing on stdout and stderr
    "bash": [".bashrc"],
    "dash": [],
    "zsh": [".zshenv"],
    "tcsh": [".tcshrc", ".login"],
    "csh": [".cshrc", ".login"],
    "fish": [".config/fish/config.fish"],
}


def make_chatty(home: Path, shell: str) -> None:
    for name in CHATTY_RC[shell]:
        rc = home / name
        rc.parent.mkdir(parents=True, exist_ok=True)
        if shell == "fish":
            rc.write_text('echo "welcome, $USER!"; echo -n "banner"; echo -n "warn" >&2\n')
        elif shell in ("tcsh", "csh"):
            rc.write_text(
                'echo "welcome to `hostname`"\necho -n "banner"\n(echo -n warn >/dev/stderr)\n'
            )
        else:
            rc.write_text('echo "welcome, $USER!"; printf "banner"; printf warn >&2\n')


@pytest.mark.parametrize("shell", SHELLS)
def test_the_agent_installs_and_answers_under_a_chatty_login_shell(
    shell: str, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    make_chatty(home, shell)
    env = {**shell_env(home), "SSH_CLIENT": "10.0.0.9 50000 22"}  # bash reads .bashrc for sshd
    host = _host(python=sys.executable, data_dir=str(tmp_path / "data"))

    def run(script: str, stdin: bytes | None = None) -> tuple[int, bytes, bytes]:
        line = with_boundary(MARKER, script)
        done = subprocess.run(
            [shell, "-c", line], input=stdin, capture_output=True, env=env, timeout=60
        )
        stdout = asyncio.run(skipped(done.stdout))
        return done.returncode, stdout, after_boundary(done.stderr, MARKER)

    code, _, err = run(agent_mod.presence_command(host))
    assert (code, err) == (97, b"")
    code, out, err = run(agent_mod.installer_command(host), agent_mod.agent_source())
    assert (code, out, err) == (0, b"", b"")
    assert (run(agent_mod.presence_command(host))) == (0, b"", b"")
    code, out, err = run(agent_mod.agent_command(host, ["version"]))
    assert code == 0 and err == b"", err
    assert json.loads(out)["agent_version"]  # the whole of stdout is the agent's JSON
    assert (home / ".cache" / "leptonctl" / agent_mod.payload_name()).is_dir()


async def skipped(data: bytes) -> bytes:
    """stdout as SshConnection reads it: from the boundary line on."""
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    assert await skip_preamble(reader, MARKER, 5.0) is None, data  # type: ignore[arg-type]
    return await reader.read()


@pytest.mark.parametrize("shell", SHELLS)
def test_what_a_chatty_rc_file_prints_never_reaches_the_output(shell: str, tmp_path: Path) -> None:
    make_chatty(tmp_path, shell)
    env = {**shell_env(tmp_path), "SSH_CLIENT": "10.0.0.9 50000 22"}
    line = with_boundary(MARKER, "echo out; echo err >&2")
    done = subprocess.run([shell, "-c", line], capture_output=True, env=env, timeout=30)
    if CHATTY_RC[shell]:
        assert b"banner" in done.stdout and b"warn" in done.stderr  # the rc files did talk
    assert asyncio.run(skipped(done.stdout)) == b"out\n"
    assert after_boundary(done.stderr, MARKER) == b"err\n"


def test_stderr_without_a_boundary_is_kept_whole() -> None:
    said = b"tcsh: Bad : modifier in $ '-'.\n"
    assert after_boundary(said, MARKER) == said
