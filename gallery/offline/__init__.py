"""Offline tools: evaluation and benchmarks in isolated libraries; never imported by the site."""
