"""edgebench: benchmark compressed computer-vision models on the edge devices they ship on."""

from __future__ import annotations

__version__ = "0.1.0"
