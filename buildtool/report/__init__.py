"""The report stage: smoke result documents (results) -> a compatibility report per GPU (compat),
with cold-pull estimates (pulltime) and the attention benchmark (benchmark, benchmark_html)."""
