"""The app served on a free port, called through `gradio_client` and plain HTTP like any remote user would."""

from __future__ import annotations

import json

import httpx
import pytest
from app_fixtures import POOL, served

import app
from logo_core.mixing import LEAD_SHARE
from logo_core.options import GENERATE_FIELDS, ROUTE_FIELDS

pytestmark = pytest.mark.slow  # the real model, a browser or a subprocess run: `make test-fast` leaves it out


@pytest.fixture(scope="module")
def server(app_engine):
    demo = app.create_demo(app_engine)
    with served(demo) as url:
        yield url, demo


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client

    return Client(server[0], verbose=False)


def check_trace(trace: dict, k: int) -> None:
    assert set(trace["scores"]) == set(POOL)  # every adapter scored
    assert len(trace["selected"]) == k
    assert set(trace["weights"]) == set(trace["selected"])
    ranked = sorted(trace["scores"], key=lambda n: -trace["scores"][n])
    assert set(trace["selected"]) == set(ranked[:k])
    w = [trace["weights"][n] for n in trace["selected"]]  # best first
    if trace["options"]["weighting"] == "lead":  # the best at full strength, the rest share LEAD_SHARE
        pos = [max(trace["scores"][n], 0.0) for n in trace["selected"]]
        assert w == pytest.approx([1.0] + [LEAD_SHARE * p / sum(pos) for p in pos[1:]])
    else:
        assert sum(w) == pytest.approx(1.0)


def test_api_lists_route_and_generate_with_every_parameter_documented(client, app_engine):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert set(endpoints) == {"/route", "/generate"}  # the page's own events stay private
    for name, fields in (("/route", ROUTE_FIELDS), ("/generate", ROUTE_FIELDS + GENERATE_FIELDS)):
        params = {p["parameter_name"]: p for p in endpoints[name]["parameters"]}
        assert list(params) == ["prompt", *fields]
        for p in params.values():
            assert p["python_type"]["description"], p["parameter_name"]  # meaning, range, default
        assert f"Here 1-{len(POOL)}" in params["k"]["python_type"]["description"]
        layer = json.dumps(app_engine.defaults.layer, default=list)
        assert f"adapters.yaml's {layer}" in params["layer"]["python_type"]["description"]  # the default, said
        assert (
            "norm" in params["signal"]["python_type"]["type"] and "entropy" in params["signal"]["python_type"]["type"]
        )
        assert endpoints[name]["description"]


def test_route_defaults_are_adapters_yaml(client, app_engine):
    for prompt in ("Translate to French: the cat sleeps.", "What is 47 + 38?"):
        trace = client.predict(prompt, api_name="/route")
        r = app_engine.route(prompt)
        assert trace["selected"] == r.selected and trace["scores"] == pytest.approx(r.scores)
        assert trace["options"]["blocks"] == list(app_engine.route_options().blocks) and trace["options"]["k"] == 2


@pytest.mark.parametrize("k", [1, 3])
def test_route_positional_and_keywords(client, k):
    trace = client.predict(
        "Write the number 342 in French words.", k, "norm", True, -1, "q_proj", "residual", api_name="/route"
    )
    check_trace(trace, k)
    assert trace["options"]["blocks"] == [29] and trace["options"]["module"] == ["q_proj"]
    trace = client.predict(
        "Convert 'user name' to snake_case.",
        k=k,
        signal="entropy",
        layer="20:30",
        module=["q_proj", "v_proj"],
        api_name="/route",
    )
    check_trace(trace, k)
    assert trace["options"]["signal"] == "entropy" and trace["options"]["blocks"] == list(range(20, 30))
    paper = client.predict("Convert 'user name' to snake_case.", k=k, weighting="proportional", api_name="/route")
    check_trace(paper, k)
    assert paper["selected"] == client.predict("Convert 'user name' to snake_case.", k=k, api_name="/route")["selected"]


def test_generate_with_a_seed(client):
    prompt = "Write the number 342 in French words."  # a pool prompt: routed (an off-pool one abstains)
    text, trace = client.predict(prompt, max_new_tokens=6, do_sample=True, seed=7, api_name="/generate")
    again, _ = client.predict(prompt, max_new_tokens=6, do_sample=True, seed=7, api_name="/generate")
    assert text == again == trace["text"] and trace["generation"]["seed"] == 7
    check_trace(trace["routing"], 2)
    assert 0 < trace["timings"]["new_tokens"] <= 6 and trace["provenance"]["adapters"]


def test_an_off_pool_question_is_answered_by_the_base_model(client):
    """adapters.yaml's `abstain_below`: no adapter stands out for general knowledge, and the trace says so."""
    trace = client.predict("What is the capital of Peru?", api_name="/route")
    assert trace["selected"] == [] and trace["options"]["mode"] == "abstained"
    assert any("answered by the base model" in n for n in trace["notices"])
    routed = client.predict("What is the capital of Peru?", abstain_below=-100, api_name="/route")
    assert len(routed["selected"]) == 2  # abstaining off: routed as before


def test_a_greeting_is_too_short_to_route(client):
    """adapters.yaml's `abstain_min_tokens`: "Hi!" is shorter than any pool prompt; the trace says why."""
    trace = client.predict("Hi!", api_name="/route")
    assert trace["selected"] == [] and trace["options"]["abstain_reason"] == "short"
    assert any("fewer than abstain_min_tokens" in n for n in trace["notices"])
    routed = client.predict("Hi!", abstain_below=-100, abstain_min_tokens=0, api_name="/route")
    assert len(routed["selected"]) == 2 and routed["options"]["mode"] == "routed"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prompt": "   "}, "prompt` is empty"),
        ({"prompt": "hi", "k": len(POOL) + 1}, f"between 1 and {len(POOL)}"),
        ({"prompt": "hi", "layer": 99}, "layer"),
        ({"prompt": "hi", "module": []}, "module` is empty"),
    ],
)
def test_bad_requests_are_errors_with_the_message(client, kwargs, message):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match=message):
        client.predict(**kwargs, api_name="/route")
    check_trace(client.predict("Write the date 2024-03-05 in German.", api_name="/route"), 2)  # still serving


def test_concurrent_users_get_their_own_results(client):
    jobs = {"a": ("How many grams are in 2.5 kg?", 1), "b": ("Write the number 77 in Spanish words.", 3)}
    running = {u: client.submit(p, k, max_new_tokens=4, api_name="/generate") for u, (p, k) in jobs.items()}
    for u, (prompt, k) in jobs.items():
        text, trace = running[u].result(timeout=300)
        assert trace["routing"]["prompt"] == prompt and trace["text"] == text
        check_trace(trace["routing"], k)


def test_one_visitor_cannot_fetch_anothers_download(server):
    """Downloads are served by their random path only: the folder, a neighbour or the private root give nothing."""
    from logo_core.hosting import PrivateFiles

    url, store = server[0], PrivateFiles()  # as the app's callbacks write them
    mine = store.write("logo_trace.json", b'{"text": "mine"}')
    theirs = store.write("logo_trace.json", b'{"text": "mine"}')  # the same content: another name
    assert mine != theirs
    get = lambda path: httpx.get(f"{url}gradio_api/file={path}", timeout=30)  # noqa: E731
    assert get(mine).status_code == 200 and get(mine).json() == {"text": "mine"}
    root = str(store.root)
    for guess in (root, root + "/", mine.rsplit("/", 2)[0] + "/" + "A" * 24 + "/logo_trace.json", "/etc/passwd"):
        assert get(guess).status_code >= 400, guess


def test_a_full_queue_answers_busy(app_engine, monkeypatch):
    """With room for one waiting request, a third concurrent one is turned away with gradio's 'busy' answer."""
    from gradio_client import Client

    monkeypatch.setattr(app, "QUEUE_SIZE", 1)
    monkeypatch.setattr(app, "CONCURRENCY", 1)
    with served(app.create_demo(app_engine)) as url:
        client = Client(url, verbose=False)
        slow = dict(max_new_tokens=12, min_new_tokens=12, api_name="/generate")
        jobs = [client.submit(f"Count to {i}.", **slow) for i in range(3)]
        errors = []
        for job in jobs:
            try:
                job.result(timeout=300)
            except Exception as e:  # gradio_client's error for a refused job
                errors.append(str(e))
        assert errors and all("queue is full" in e.lower() or "busy" in e.lower() for e in errors), errors
