"""Issue 27: README's Python snippets for the service run as written (before: the jobs snippet
used undefined ``KEY`` and ``keyframes``, and ``submit_job`` refused the client's own
``Keyframe`` objects). Each ``fbil.client`` snippet runs against a real local service; only
its address, key and video are this test's (the README's video is made by ``fbil-train synth``).
Its JSON examples are complete ``/detect`` answers (every field the service sends)."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

from fbil.client.local import local_service
from fbil.service.schemas import EXAMPLE_RESPONSE, DetectResponse
from tests.support.serving import TinyModel

README = Path(__file__).resolve().parents[2] / "README.md"
KEY = "readme-key-0123456789abcdef0123"
URL, VIDEO = "http://127.0.0.1:8000", "/tmp/synth/videos/synth5_0000.mp4"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", README.read_text(), re.M | re.S)


def test_readme_client_snippets_run_against_a_local_service(
    tiny_model: TinyModel, megamind: Path, tmp_path: Path
):
    # the live-stream snippet needs a camera: its client calls run against a local source in
    # tests/service/test_streams.py
    snippets = [b for b in _blocks("python") if "fbil.client" in b and "create_stream" not in b]
    assert len(snippets) >= 2  # /detect and jobs
    env = {
        "FBIL_API_KEYS": KEY,
        "FBIL_DATA_DIR": str(tmp_path / "data"),
        "FBIL_DETECTOR": "none",
        "FBIL_JOB_MIN_FREE_DISK_BYTES": "0",
    }
    with local_service(tiny_model.path, env=env, hermetic=True, log_file=tmp_path / "log") as s:
        for snippet in snippets:
            assert URL in snippet and "MY_KEY" in snippet, snippet
            code = snippet.replace(URL, s.url).replace("MY_KEY", KEY)
            code = code.replace(VIDEO, str(megamind))
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                exec(compile(code, "README.md", "exec"), {})  # noqa: S102
            assert out.getvalue().strip(), snippet  # each prints what it shows
            if "submit_job" in snippet:
                assert out.getvalue().splitlines()[-1].startswith("succeeded ")


def test_response_examples_are_complete_answers():
    marked = re.findall(
        r"<!-- detect[a-z-]*-example -->\n```json\n(.*?)^```$", README.read_text(), re.M | re.S
    )
    assert len(marked) >= 2
    for example in [EXAMPLE_RESPONSE, *(json.loads(m) for m in marked)]:
        answer = DetectResponse.model_validate(example).model_dump(mode="json")
        assert answer == example  # nothing the service sends is missing from the example
