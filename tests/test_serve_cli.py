"""`omnilm serve` as a user runs it: a subprocess on loopback, stopped with SIGTERM mid-request."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from omnilm.cli.main import build_parser  # noqa: E402
from omnilm.cli.serve import settings_from_args  # noqa: E402
from omnilm.serve.background import free_port  # noqa: E402
from omnilm.testing import tiny_model  # noqa: E402


def test_serve_help_has_an_example(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--help"])
    assert "example:" in capsys.readouterr().out


def test_flags_become_settings():
    args = build_parser().parse_args(["serve", "model", "--api-key", "k", "--allow-remote-media", "--allowed-hosts",
                                      "a.example", "b.example", "--max-media-items", "2", "--max-body-mb", "1",
                                      "--max-tokens", "99", "--timeout", "5", "--max-video-frames", "10"])
    settings = settings_from_args(args)
    assert (args.host, args.port) == ("127.0.0.1", 8000)
    assert settings.api_key == "k" and settings.allowed_hosts == ("a.example", "b.example")
    assert (settings.max_media_items, settings.max_body_bytes, settings.max_tokens) == (2, 2**20, 99)
    assert (settings.request_timeout, settings.max_video_frames) == (5.0, 10)


def test_serve_subprocess_answers_and_shuts_down_gracefully(tmp_path):
    model_dir = tmp_path / "tiny"
    tiny_model(("image",)).save(model_dir)
    port = free_port()
    env = {**os.environ, "OMNILM_API_KEY": "env-key"}
    process = subprocess.Popen(
        [sys.executable, "-m", "omnilm.cli.main", "serve", str(model_dir), "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    url, headers = f"http://127.0.0.1:{port}", {"Authorization": "Bearer env-key"}
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.stdout.read()
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not come up in 120 s"
            time.sleep(0.3)
        assert httpx.get(url + "/v1/models", timeout=10).status_code == 401  # key taken from OMNILM_API_KEY
        body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 200, "ignore_eos": True,
                "stream": True, "stream_options": {"include_usage": True}}
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, headers=headers, timeout=120) as response:
            assert response.status_code == 200
            lines = response.iter_lines()
            first = next(line for line in lines if line.startswith("data:"))
            process.send_signal(signal.SIGTERM)  # mid-stream: the answer must still be completed
            rest = [line for line in lines if line.startswith("data:")]
        assert rest[-1] == "data: [DONE]"
        usage = json.loads(rest[-2][5:])["usage"]
        assert usage["completion_tokens"] == 200, (first, rest[-3:])
        # uvicorn re-raises SIGTERM once shutdown is complete, so the exit status says how it was stopped
        assert process.wait(timeout=60) in (0, -signal.SIGTERM)
        assert "finishing queued and running requests" in process.stdout.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
