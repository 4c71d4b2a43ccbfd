"""Helpers for the stack-file tests: parse text as ``stack.yml`` with env files in memory."""

from __future__ import annotations

from typing import Dict, Optional

import pytest

from swarmlet.stack import Stack, parse_stack


def _parse(text: str, env: Optional[Dict[str, str]] = None,
           files: Optional[Dict[str, str]] = None, name: Optional[str] = "demo") -> Stack:
    files = files or {}

    def read_text(path: str) -> str:
        if path not in files:
            raise FileNotFoundError(2, "No such file or directory", path)
        return files[path]

    return parse_stack(text, "stack.yml", env or {}, name=name, base_dir="/srv/app",
                       read_text=read_text)


@pytest.fixture(scope="session")
def parse():
    return _parse
