"""HTTP API: FastAPI app factory, dependencies, schemas, one router per resource."""
