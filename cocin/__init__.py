"""cocin: a teaching-grade, Docker-like container runtime in pure Python."""
