"""``mlx-ollama-bridge run`` / ``chat`` on a vision model: image files named in the prompt go as
images, as ``ollama run`` sends them (Ollama's path rules, "Added image" on stderr)."""

from __future__ import annotations

import requests
from click.testing import CliRunner
from tiny_vision_model import b64, picture

from mlx_ollama_bridge.cli import main

FEW = ("-o", "num_predict=4", "-o", "temperature=0")
RED = picture((220, 20, 20))


def cli(*args: str, input: str | None = None):
    return CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)


def test_run_sends_the_named_image(vision_server, tmp_path):
    path = tmp_path / "red.png"
    path.write_bytes(RED)
    result = cli(
        "--host", vision_server.url, "run", "tiny-vision", f"What is {path} showing?", *FEW
    )
    assert result.exit_code == 0, result.output
    assert f"Added image '{path}'" in result.stderr
    body = {
        "model": "tiny-vision",
        "prompt": "What is  showing?",
        "images": [b64(RED)],
        "stream": False,
        "options": {"num_predict": 4, "temperature": 0},
    }
    native = requests.post(vision_server.url + "/api/generate", json=body, timeout=120).json()
    assert result.stdout.strip() == native["response"].strip()


def test_chat_sends_the_named_image_and_keeps_missing_paths(vision_server, tmp_path):
    path = tmp_path / "red.png"
    path.write_bytes(RED)
    turns = f"describe {path}\nand /no/such/file.png\n/bye\n"
    result = cli("--host", vision_server.url, "chat", "tiny-vision", *FEW, input=turns)
    assert result.exit_code == 0, result.output
    assert result.stderr.count("Added image") == 1


def test_a_named_file_that_is_not_an_image(vision_server, tmp_path):
    path = tmp_path / "fake.png"
    path.write_text("not a picture")
    result = cli("--host", vision_server.url, "run", "tiny-vision", f"see {path}", *FEW)
    assert result.exit_code == 1
    assert "invalid file type" in result.stderr


def test_a_text_model_gets_the_path_as_text(vision_server, tmp_path):
    path = tmp_path / "red.png"
    path.write_bytes(RED)
    result = cli("--host", vision_server.url, "run", "tiny", f"What is {path}?", *FEW)
    assert result.exit_code == 0 and "Added image" not in result.stderr
