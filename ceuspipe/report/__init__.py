"""Self-contained HTML reports: one per exam (``report.html`` in a segment-video
output folder, :mod:`ceuspipe.report.exam`) and one per batch output root
(``index.html``, :mod:`ceuspipe.report.index`). Both open from a share or a USB
stick in any browser: images are embedded as data URIs, nothing is fetched."""

from ceuspipe.report.exam import REPORT_NAME, build_exam_report, write_exam_report
from ceuspipe.report.index import INDEX_NAME, build_index, write_index

__all__ = ["REPORT_NAME", "INDEX_NAME", "build_exam_report", "write_exam_report", "build_index", "write_index"]
