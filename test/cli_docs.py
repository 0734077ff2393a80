#!/usr/bin/env python3
"""The sockmesh command line against its documentation, no kernel needed. Prints TAP.

Every command of 'sockmesh --help' is run with --help; every option its usage shows must appear in
docs/agent.md where that command is described (its section, or its line in a command list) and on
its line of README.md's command list (a README line that says '[options]' defers to docs/agent.md).
Also: 'sockmesh --version', 'sockmesh version --help', option errors prefixed 'sockmesh CMD:', and
'sockmesh print' showing addresses as IP text (base64 with --proto3-json), and README.md's layout table and
docs/architecture.md's table of layers naming every folder that has a meson.build.
Usage: cli_docs.py BUILD_DIR SOURCE_DIR
"""
import os
import re
import json
import subprocess
import sys
import tempfile

build, source = sys.argv[1], sys.argv[2]
sockmesh = os.path.join(build, "agent", "sockmesh")
results = []


def check(name, problems):
    """problems: a list of strings, empty when the check passes."""
    results.append((name, problems))


def run(*args):
    return subprocess.run([sockmesh, *args], capture_output=True, text=True, timeout=30)


def commands():
    out = run("--help").stdout
    listed = out.split("Commands:\n", 1)[1].split("\n\n", 1)[0]
    return [line.split()[0] for line in listed.splitlines() if line.strip()]


def help_options(command):
    """Options of 'sockmesh COMMAND --help': its usage line and its option lines, not its prose."""
    text = run(command, "--help").stdout
    found = []
    for line in text.splitlines():
        if line.startswith("Usage:") or re.match(r"\s+--", line):
            part = line if line.startswith("Usage:") else line.split()[0]
            for option in re.findall(r"--[a-z][a-z0-9-]*", part):
                if option != "--help" and option not in found:
                    found.append(option)
    return found


def mentions(text, option):
    return re.search(re.escape(option) + r"(?![a-z0-9-])", text) is not None


def command_lines(text, command):
    return [line for line in text.splitlines() if re.match(r"\s+sockmesh " + command + r"( |$)", line)]


def agent_md_scope(text, command):
    """The section headed `sockmesh COMMAND`, plus the command-list lines that start with it."""
    scope = command_lines(text, command)
    lines = text.splitlines()
    for i, line in enumerate(lines):
        heading = re.match(r"(#+) .*`sockmesh " + command + r"`", line)
        if heading:
            level = len(heading.group(1))
            for following in lines[i + 1:]:
                other = re.match(r"(#+) ", following)
                if other and len(other.group(1)) <= level:
                    break
                scope.append(following)
    return "\n".join(scope)


def main():
    with open(os.path.join(source, "docs", "agent.md")) as f:
        agent_md = f.read()
    with open(os.path.join(source, "README.md")) as f:
        readme = f.read()

    names = commands()
    check("'sockmesh --help' lists the commands", [] if "run" in names and "version" in names else [f"got {names}"])

    version = run("version").stdout
    problems = [] if re.fullmatch(r"sockmesh \S+\n", version) else [f"'sockmesh version' printed {version!r}"]
    if run("--version").stdout != version:
        problems.append(f"'sockmesh --version' printed {run('--version').stdout!r}, not {version!r}")
    check("'sockmesh --version' and 'sockmesh version' print the version", problems)
    usage = run("version", "--help")
    check("'sockmesh version --help' prints version's usage",
          [] if usage.stdout.startswith("Usage: sockmesh version") else [f"printed {usage.stdout!r}"])

    for command in names:
        bad = run(command, "--no-such-option")
        first = bad.stderr.splitlines()[0] if bad.stderr else ""
        problems = []
        if not first.startswith(f"sockmesh {command}: unrecognized option"):
            problems.append(f"stderr's first line is {first!r}")
        if bad.returncode != 2:
            problems.append(f"exit status {bad.returncode}, not 2")
        check(f"an unknown option of '{command}' is reported as 'sockmesh {command}: ...'", problems)

    for command in names:
        options = help_options(command)
        scope = agent_md_scope(agent_md, command)
        problems = []
        if not scope:
            problems.append(f"docs/agent.md does not describe 'sockmesh {command}' (no `sockmesh {command}` heading "
                            f"and no command-list line)")
        for option in options:
            if scope and not mentions(scope, option):
                problems.append(f"docs/agent.md: 'sockmesh {command}' lacks {option} (shown by 'sockmesh {command} --help')")
        check(f"docs/agent.md has every option of 'sockmesh {command} --help'", problems)

        lines = command_lines(readme, command)
        problems = []
        if not lines:
            problems.append(f"README.md: the command list has no line for 'sockmesh {command}'")
        elif "[options]" not in lines[0]:
            for option in options:
                if not mentions(lines[0], option):
                    problems.append(f"README.md: the line of 'sockmesh {command}' lacks {option} "
                                    f"(shown by 'sockmesh {command} --help')")
        check(f"README.md lists 'sockmesh {command}' with the options of its --help", problems)

    table = re.search(r"## Layout\n(.*?)\n\n", readme, re.S).group(1)
    listed = set(re.findall(r"^\| `([^`/]+)/` \|", table, re.M))
    built = {d for d in os.listdir(source) if os.path.isfile(os.path.join(source, d, "meson.build"))}
    problems = [f"README.md's layout has no row for {d}/" for d in sorted(built - listed)]
    problems += [f"README.md's layout lists {d}/, which is not a folder of the tree" for d in sorted(listed)
                 if not os.path.isdir(os.path.join(source, d))]
    check("README.md's layout names every folder that builds, and only folders that exist", problems)
    with open(os.path.join(source, "docs", "architecture.md")) as f:
        layers = set(re.findall(r"^\| `([^`/]+)/` \|", f.read(), re.M))
    check("docs/architecture.md's table of layers has every folder that builds but test/ and bench/",
          [f"docs/architecture.md has no row for {d}/" for d in sorted(built - layers - {"test", "bench"})])

    with tempfile.TemporaryDirectory() as work:
        stream = os.path.join(work, "local.xds")
        fixture = os.path.join(source, "test", "fixtures", "real", "ztunnel-local-config.yaml")
        converted = run("convert", fixture, stream)
        problems = [] if converted.returncode == 0 else [f"convert failed: {converted.stderr}"]
        if not problems:
            shown = [json.loads(line) for line in run("print", "--compact", stream).stdout.splitlines()]
            exact = [json.loads(line) for line in run("print", "--compact", "--proto3-json", stream).stdout.splitlines()]
            first = shown[0]["resources"][0]["resource"]["service"]["addresses"][0]["address"]
            if first != "127.10.0.1":
                problems.append(f"print: the first VIP is {first!r}, not '127.10.0.1'")
            first = exact[0]["resources"][0]["resource"]["service"]["addresses"][0]["address"]
            if first != "fwoAAQ==":
                problems.append(f"print --proto3-json: the first VIP is {first!r}, not base64 'fwoAAQ=='")
        check("'sockmesh print' shows addresses as IP text, and as base64 with --proto3-json", problems)

    failed = 0
    for number, (name, problems) in enumerate(results, 1):
        for problem in problems:
            print(f"# {problem}")
        print(f"{'not ok' if problems else 'ok'} {number} - {name}")
        failed += bool(problems)
    print(f"1..{len(results)}")
    return 1 if failed else 0


sys.exit(main())
