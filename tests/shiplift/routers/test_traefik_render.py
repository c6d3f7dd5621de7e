"""The Traefik configuration shiplift writes: weighted services, a generation, a header."""

from __future__ import annotations

import json

import yaml

from shiplift.routers import Routes
from shiplift.routers.traefik import _HEADER, render


def test_render_weighted_services_with_generation_and_header() -> None:
    text = render("hello", 7, Routes({"v1": "http://a:8000", "v2": "http://b:8000"}, {"v1": 80, "v2": 20}))
    doc = yaml.safe_load(text)
    http = doc["http"]
    assert http["routers"]["app"]["service"] == "hello-g7"
    assert http["services"]["hello-g7"]["weighted"]["services"] == [
        {"name": "v-v1", "weight": 80},
        {"name": "v-v2", "weight": 20},
    ]
    assert http["services"]["v-v2"]["loadBalancer"]["servers"] == [{"url": "http://b:8000"}]
    header = json.loads(_HEADER.search(text).group("json"))  # type: ignore[union-attr]
    assert header["generation"] == 7 and header["weights"] == {"v1": 80, "v2": 20}


def test_zero_weight_backends_are_left_out_and_no_backend_means_no_router() -> None:
    doc = yaml.safe_load(
        render("hello", 2, Routes({"v1": "http://a:8000", "v2": "http://b:8000"}, {"v1": 0, "v2": 100}))
    )
    assert doc["http"]["services"]["hello-g2"]["weighted"]["services"] == [{"name": "v-v2", "weight": 100}]
    assert yaml.safe_load(render("hello", 0, Routes({}, {}))) == {"http": {}}
