"""Report: plots and a self-contained HTML page from stored runs (reads the store only).

``write_report(store, run_ids, out_dir)`` writes ``out_dir/report.html`` (images embedded as
base64 PNG, no scripts, nothing fetched from the network) and one PNG per plot beside it.
"""

from perennial.report.html import build_report, write_report

__all__ = ["build_report", "write_report"]
