"""The app served on a free port, called through `gradio_client` like any remote user would."""

from __future__ import annotations

import pytest
from app_fixtures import POOL, served

import app


@pytest.fixture(scope="module")
def client(app_engine):
    from gradio_client import Client

    with served(app.create_demo(app_engine)) as url:
        yield Client(url, verbose=False)


def check_trace(trace: dict, k: int) -> None:
    assert set(trace["scores"]) == set(POOL)  # every adapter scored
    assert len(trace["selected"]) == k
    assert set(trace["weights"]) == set(trace["selected"])
    assert sum(trace["weights"].values()) == pytest.approx(1.0)
    ranked = sorted(trace["scores"], key=lambda n: -trace["scores"][n])
    assert set(trace["selected"]) == set(ranked[:k])


def test_api_lists_route_and_generate(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/route", "/generate"} <= set(endpoints)
    assert len(endpoints) == 2  # the UI's own events stay private


@pytest.mark.parametrize("k", [1, 3])
def test_route(client, k):
    trace = client.predict("What is the capital of Peru?", k, "norm", True, -1, "q_proj", "residual", api_name="/route")
    check_trace(trace, k)
    assert trace["options"]["k"] == k and trace["timings"]["probe_s"] > 0


def test_route_defaults_and_options(client):
    trace = client.predict("Translate to French: the cat sleeps.", api_name="/route")  # adapters.yaml defaults
    check_trace(trace, 2)
    trace = client.predict("Sort these words: pear apple fig", k=2, signal="entropy", layer="20:30", api_name="/route")
    check_trace(trace, 2)
    assert trace["options"]["signal"] == "entropy" and trace["options"]["layers"] == list(range(20, 30))


def test_generate(client):
    text, trace = client.predict("What is 12 + 30?", 2, max_new_tokens=8, api_name="/generate")
    assert isinstance(text, str) and text.strip()
    check_trace(trace["routing"], 2)
    assert trace["text"] == text
    assert 0 < trace["timings"]["new_tokens"] <= 8


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prompt": "   "}, "prompt` is empty"),
        ({"prompt": "hi", "k": len(POOL) + 1}, f"between 1 and {len(POOL)}"),
        ({"prompt": "hi", "layer": 99}, "layer"),
    ],
)
def test_bad_requests_are_errors_with_the_message(client, kwargs, message):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match=message):
        client.predict(**kwargs, api_name="/route")
    # ... and the app keeps serving
    check_trace(client.predict("Is this review positive? Great phone!", api_name="/route"), 2)


def test_concurrent_users_get_their_own_results(client):
    jobs = {"a": ("What is 20 + 22?", 1), "b": ("Translate to French: the dog runs.", 3)}
    running = {u: client.submit(p, k, max_new_tokens=6, api_name="/generate") for u, (p, k) in jobs.items()}
    for u, (prompt, k) in jobs.items():
        text, trace = running[u].result(timeout=300)
        assert trace["routing"]["prompt"] == prompt and trace["text"] == text
        check_trace(trace["routing"], k)
