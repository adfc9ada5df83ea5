"""deploy/compose: one host, the images `make images` builds, agents beside their boxes."""

from __future__ import annotations

from pathlib import Path

import yaml

from asterfleet.ship.images import IMAGES, image_ref

REPO = Path(__file__).resolve().parents[2]


def test_compose_runs_only_images_make_images_builds() -> None:
    compose = yaml.safe_load((REPO / "deploy/compose/compose.yaml").read_text())
    services = compose["services"]
    built = {image_ref(name) for name in IMAGES}
    assert {s["image"] for s in services.values()} <= built
    # Every node agent shares its box's network namespace, as in a Pod, and has
    # a stop grace period long enough to drain.
    for name, service in services.items():
        if name.endswith("-agent"):
            assert service["network_mode"] == f"service:{name.removesuffix('-agent')}"
            assert service["command"][:2] == ["node", "run"]
            assert service["stop_grace_period"]
    assert services["balancer"]["network_mode"] == "service:kamailio"
