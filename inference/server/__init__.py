"""HTTP API over a tagger directory (FastAPI): `inference.server.app.create_app(model_dir)`, or
`uvicorn inference.server.app:create_app_from_env --factory`.

schemas: request and response bodies; limits: the server's limits, defined once;
errors: error bodies and handlers; service: model loading and hot swap; app: the routes.
This file imports nothing, so `inference.server.limits` (the CLI's option defaults)
loads without FastAPI, an optional dependency (the `serve` extra).
"""
