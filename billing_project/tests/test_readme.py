"""The README's API session ("A first session with the API") works as written.

Its shell blocks are run in order, as a shell would, against the API through Django's test client:
`curl` requests (with their headers, bodies and here-documents), `NAME=$(... | jq -r PATH)` and
`NAME=$(./manage.py ... | tail -1)` captures, `./manage.py` commands (in-process, with the environment
they are given) and plain commands such as `date`. Each JSON block is the answer of the command just
before it: the test compares the real answer with it, field by field, values included except those
that differ from run to run (ids, tokens, times).
"""

import io
import json
import re
import shlex
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.core.management import call_command
from rest_framework.test import APIClient

from credits.services import pricing_catalog_seed
from subscriptions.services import tier_catalog_seed

README = Path(settings.BASE_DIR) / "README.md"
SECTION = "## A first session with the API"
# Values that differ from one run to the next; only their type is compared.
VARYING = {"id", "user_id", "deduction_id", "reversal_id", "grant_id", "allocation_id", "created_at", "expires_at"}


def readme_blocks() -> list[tuple[str, str]]:
    text = README.read_text()
    section = text[text.index(SECTION) :]
    section = section[: section.index("\n## ", len(SECTION))]
    return re.findall(r"```(\w+)\n(.*?)```", section, flags=re.DOTALL)


def commands(script: str) -> list[tuple[str, str | None]]:
    """(command, here-document or None) of a shell block, continuation lines joined."""
    lines = script.replace("\\\n", " ").splitlines()
    result = []
    while lines:
        line = lines.pop(0).strip()
        if not line or line.startswith("#"):
            continue
        heredoc = None
        if line.endswith("<<EOF"):
            body = []
            while (next_line := lines.pop(0)) != "EOF":
                body.append(next_line)
            heredoc = "\n".join(body)
            line = line.removesuffix("<<EOF").strip()
        result.append((line, heredoc))
    return result


def expand(text: str, env: dict, *, quoted: bool = True) -> str:
    """$NAME expanded as the shell does: everywhere but inside single quotes (when `quoted`)."""
    out, in_single = [], False
    for part in re.split(r"('|\$\{?\w+\}?)", text):
        if part == "'" and quoted:
            in_single = not in_single
        if part.startswith("$") and not in_single:
            part = env[part.strip("${}")]
        out.append(part)
    return "".join(out)


def jq(body: str, path: str):
    value = json.loads(body)
    for key, index in re.findall(r"\.(\w+)|\[(\d+)\]", path):
        value = value[key] if key else value[int(index)]
    return value


class Shell:
    def __init__(self, monkeypatch):
        self.env: dict[str, str] = {}
        self.client = APIClient()
        self.monkeypatch = monkeypatch
        self.last = None  # (status, body) of the last command whose answer was printed

    def run(self, line: str, heredoc: str | None) -> str:
        if match := re.fullmatch(r"(\w+)=\$\((.*)\)", line):
            self.env[match[1]] = self.pipeline(match[2], heredoc).strip()
            return ""
        if match := re.fullmatch(r"(\w+)=(\S+)", line):
            self.env[match[1]] = expand(match[2], self.env)
            return ""
        return self.pipeline(line, heredoc)

    def pipeline(self, line: str, heredoc: str | None) -> str:
        command, *filters = [part.strip() for part in line.split(" | ")]
        output = self.command(command, heredoc)
        for step in filters:
            words = shlex.split(step)
            if words[:2] == ["jq", "-r"]:
                output = str(jq(output, words[2]))
            elif words == ["tail", "-1"]:
                output = output.strip().splitlines()[-1]
            else:
                raise AssertionError(f"the README test does not run `{step}`")
        return output

    def command(self, command: str, heredoc: str | None) -> str:
        words = shlex.split(expand(command, self.env))
        assignments = {}
        while "=" in words[0] and not words[0].startswith("-"):
            name, value = words.pop(0).split("=", 1)
            assignments[name] = value
        if words[0] == "curl":
            return self.curl(words[1:], None if heredoc is None else expand(heredoc, self.env, quoted=False))
        if words[0] == "./manage.py":
            for name, value in assignments.items():
                self.monkeypatch.setenv(name, value)
            out = io.StringIO()
            call_command(*words[1:], stdout=out, stderr=io.StringIO())
            return out.getvalue()
        return subprocess.run(words, capture_output=True, text=True, check=True).stdout

    def curl(self, words: list[str], heredoc: str | None) -> str:
        method, headers, body, url = None, {}, None, None
        while words:
            word = words.pop(0)
            if word == "-s":
                continue
            if word == "-X":
                method = words.pop(0)
            elif word == "-H":
                name, value = words.pop(0).split(": ", 1)
                headers[name] = value
            elif word == "-d":
                body = words.pop(0)
                body = heredoc if body == "@-" else body
            else:
                url = word
        parts = urlsplit(url)
        content_type = headers.pop("Content-Type", None)
        response = self.client.generic(
            method or ("POST" if body is not None else "GET"),
            parts.path + (f"?{parts.query}" if parts.query else ""),
            data=(body or "").encode(),
            content_type=content_type or "application/octet-stream",
            headers=headers,
        )
        self.last = (response.status_code, response.content.decode())
        return response.content.decode()


def differences(documented, answered, where="$") -> list[str]:
    """Where a real answer differs from the documented one (for VARYING fields: in type only)."""
    if isinstance(documented, dict) and isinstance(answered, dict):
        if set(documented) != set(answered):
            return [f"{where}: fields {sorted(documented)} documented, {sorted(answered)} answered"]
        found = []
        for key, value in documented.items():
            if key not in VARYING:
                found += differences(value, answered[key], f"{where}.{key}")
            elif type(value) is not type(answered[key]):
                found.append(f"{where}.{key}: {value!r} documented, {answered[key]!r} answered")
        return found
    if isinstance(documented, list) and isinstance(answered, list) and len(documented) == len(answered):
        return [
            difference
            for index, (item, answer) in enumerate(zip(documented, answered, strict=True))
            for difference in differences(item, answer, f"{where}[{index}]")
        ]
    return [] if documented == answered else [f"{where}: {documented!r} documented, {answered!r} answered"]


@pytest.mark.django_db
def test_the_readme_api_session_runs_as_written(monkeypatch):
    # what ./scripts/dev sets up before the reader starts
    tier_catalog_seed()
    pricing_catalog_seed()
    shell = Shell(monkeypatch)
    blocks = readme_blocks()
    assert [language for language, _ in blocks].count("bash") >= 5
    checked = 0
    for language, text in blocks:
        if language == "bash":
            shell.last = None
            for line, heredoc in commands(text):
                shell.run(line, heredoc)
            continue
        assert language == "json" and shell.last is not None, "a JSON answer follows the command that prints it"
        status, body = shell.last
        documented = json.loads(text)
        expected_status = documented["status"] if "type" in documented else None
        assert status == expected_status if expected_status else 200 <= status < 300, (status, body)
        assert not differences(documented, json.loads(body))
        checked += 1
    assert checked >= 7
