"""Shared math used by all three papers: attention (Titans Eq. 1-7), masks, scans."""
