"""Persistence: models, session factory and repositories (keyword-only, explicit session)."""
