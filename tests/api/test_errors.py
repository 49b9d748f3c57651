"""Every bad input gets the contract's error body, the right status and `param`, and the
server answers the next request normally."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.conftest import MODEL, Server

USER = [{"role": "user", "content": "hi"}]

BAD_CHAT = [
    ("{not json", 400, None),
    ("[1, 2]", 400, None),
    ({"messages": USER}, 400, "model"),
    ({"model": MODEL}, 400, "messages"),
    ({"model": MODEL, "messages": []}, 400, "messages"),
    ({"model": MODEL, "messages": "hi"}, 400, "messages"),
    ({"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]}, 400, "messages.0.role"),
    ({"model": MODEL, "messages": [{"role": "user"}]}, 400, "messages.0.content"),
    ({"model": MODEL, "messages": USER, "temperature": -0.5}, 400, "temperature"),
    ({"model": MODEL, "messages": USER, "temperature": "hot"}, 400, "temperature"),
    ({"model": MODEL, "messages": USER, "top_p": 1.5}, 400, "top_p"),
    ({"model": MODEL, "messages": USER, "n": 129}, 400, "n"),
    ({"model": MODEL, "messages": USER, "max_tokens": 0}, 400, "max_tokens"),
    ({"model": MODEL, "messages": USER, "max_tokens": "ten"}, 400, "max_tokens"),
    ({"model": MODEL, "messages": USER, "presence_penalty": 3}, 400, "presence_penalty"),
    ({"model": MODEL, "messages": USER, "stop": 5}, 400, "stop"),
    ({"model": MODEL, "messages": USER, "stream": "maybe"}, 400, "stream"),
    ({"model": "gpt-17", "messages": USER}, 404, "model"),
    ({"model": MODEL, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]},
     400, "messages.0.content.0.type"),
    ({"model": MODEL, "messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]}]},
     400, "messages.0.content.0.type"),
    ({"model": MODEL, "messages": USER, "max_tokens": 5000}, 400, "max_tokens"),
]


def check_error(response: httpx.Response, status: int, param: str | None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str)
    assert error["code"] is None or isinstance(error["code"], str)
    assert error["param"] == param
    return error


@pytest.mark.parametrize(("body", "status", "param"), BAD_CHAT)
def test_bad_chat_requests(fake_server: Server, body: object, status: int,
                           param: str | None) -> None:
    content = body if isinstance(body, str) else json.dumps(body)
    response = httpx.post(f"{fake_server.base_url}/chat/completions", content=content,
                          headers={"Content-Type": "application/json"})
    error = check_error(response, status, param)
    if status == 404:
        assert error["code"] == "model_not_found" and MODEL in error["message"]
    ok = httpx.post(f"{fake_server.base_url}/chat/completions",
                    json={"model": MODEL, "messages": USER})
    assert ok.status_code == 200


def test_unknown_fields_are_ignored(fake_server: Server) -> None:
    response = httpx.post(f"{fake_server.base_url}/chat/completions", json={
        "model": MODEL, "messages": USER, "parallel_tool_calls": True, "user": "u1",
        "safety_model": "x", "reasoning_effort": "low", "stream": False})
    assert response.status_code == 200


def test_developer_role_and_multi_turn(fake_server: Server) -> None:
    response = httpx.post(f"{fake_server.base_url}/chat/completions", json={
        "model": MODEL, "messages": [
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "a"},
                                         {"type": "text", "text": "b"}]},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "again"}]})
    assert response.status_code == 200


def test_bad_completions(fake_server: Server) -> None:
    url = f"{fake_server.base_url}/completions"
    check_error(httpx.post(url, json={"model": MODEL}), 400, "prompt")
    check_error(httpx.post(url, json={"model": MODEL, "prompt": ""}), 400, "prompt")
    check_error(httpx.post(url, json={"model": MODEL, "prompt": "x", "top_p": -1}), 400, "top_p")
    check_error(httpx.post(url, json={"model": MODEL, "prompt": "x" * 3000}), 400, "prompt")


def test_not_found_and_wrong_method(fake_server: Server) -> None:
    check_error(httpx.get(f"{fake_server.base_url}/nothing"), 404, None)
    check_error(httpx.get(f"{fake_server.base_url}/chat/completions"), 405, None)


def test_prompt_too_long_truncates_on_request(fake_server: Server) -> None:
    long = [{"role": "user", "content": "word " * 1000}]  # 5000 fake tokens > 2048
    url = f"{fake_server.base_url}/chat/completions"
    error = check_error(httpx.post(url, json={"model": MODEL, "messages": long}), 400, "messages")
    assert error["code"] == "context_length_exceeded"
    response = httpx.post(url, json={"model": MODEL, "messages": long, "max_tokens": 10,
                                     "context_length_exceeded_behavior": "truncate"})
    assert response.status_code == 200
    assert response.json()["usage"]["prompt_tokens"] <= 2048 - 10


def test_double_v1_prefix_is_collapsed(fake_server: Server) -> None:
    response = httpx.post(f"{fake_server.root}/v1/v1/chat/completions",
                          json={"model": MODEL, "messages": USER})
    assert response.status_code == 200
    assert response.json()["object"] == "chat.completion"


def test_models_list_shape_follows_user_agent(fake_server: Server) -> None:
    wrapped = httpx.get(f"{fake_server.base_url}/models").json()
    assert wrapped["object"] == "list" and wrapped["data"][0]["id"] == MODEL
    bare = httpx.get(f"{fake_server.base_url}/models",
                     headers={"User-Agent": "Together/v1 PythonBindings/1.5.35"}).json()
    assert isinstance(bare, list) and bare[0]["id"] == MODEL
    for key in ("object", "created", "owned_by", "type", "display_name", "organization",
                "context_length", "pricing"):
        assert key in bare[0]
