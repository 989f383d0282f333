"""Titans — Learning to Memorize at Test Time (arXiv 2501.00663v1)."""
