"""Database URLs as users write them, made into the async URLs the engine needs."""

from __future__ import annotations


def async_url(url: str) -> str:
    """``url`` with an async driver. (For now: unchanged.)"""
    return url
