"""The study's storage: which database driver a URL gets, and the refusal of a missing one."""

import pytest


def test_a_plain_postgresql_url_names_the_installed_driver(monkeypatch):
    """SQLAlchemy 2.1 reads a plain postgresql:// as psycopg 3, 2.0 as psycopg2: the URL gets the one
    installed, so the documented URL works with either; other URLs pass through."""
    from orpo.tune import backend

    monkeypatch.setattr(backend, "_importable", lambda module: module == "psycopg")
    assert backend.with_driver("postgresql://me@127.0.0.1:5/db") == "postgresql+psycopg://me@127.0.0.1:5/db"
    backend.check_driver("postgresql://me@127.0.0.1:5/db")  # psycopg is enough
    monkeypatch.setattr(backend, "_importable", lambda module: True)
    assert backend.with_driver("postgresql://me@h/db").startswith("postgresql+psycopg2://")
    assert backend.with_driver("postgresql+pg8000://me@h/db") == "postgresql+pg8000://me@h/db"
    assert backend.with_driver("sqlite:///x.db") == "sqlite:///x.db"
    monkeypatch.setattr(backend, "_importable", lambda module: False)
    with pytest.raises(ValueError, match=r"PostgreSQL needs a driver"):
        backend.check_driver("postgresql://me@h/db")
    with pytest.raises(ValueError, match=r"psycopg \(3\) is not installed: pip install 'psycopg\[binary\]'"):
        backend.check_driver("postgresql+psycopg://me@h/db")
