"""The OpenAPI description a producer reads at /docs."""

from __future__ import annotations

from fastapi.testclient import TestClient

from clarion.api.app import create_app
from clarion.settings import Settings

# Deliberately public: the signed link in an email, and the key browsers subscribe with.
PUBLIC = {"/v1/unsubscribe", "/v1/push/vapid-public-key"}


def test_every_operation_is_described_and_documented_with_auth(tmp_path):
    app = create_app(Settings.embedded(tmp_path))
    spec = app.openapi()

    operations = [
        (path, method, op) for path, ops in spec["paths"].items() for method, op in ops.items()
    ]
    assert len(operations) >= 12
    for path, method, op in operations:
        assert op.get("summary"), f"{method.upper()} {path} has no summary"
        if path.startswith("/v1/") and path not in PUBLIC:
            assert op.get("security"), f"{method.upper()} {path} does not declare its auth"
    send = spec["paths"]["/v1/notifications"]["post"]
    assert "examples" in spec["components"]["schemas"]["NotificationCreate"]
    assert {"202", "409", "422", "503"} <= set(send["responses"])
    with TestClient(app) as client:
        assert "swagger" in client.get("/docs").text.lower()
