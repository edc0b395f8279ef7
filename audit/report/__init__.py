"""Outputs of a finished results document: ``outputs`` (the ``OutputFormat`` interface and
registry: results.json, junit.xml, report.pdf, the console summary), the PDF report (``render``,
``context``, ``plots``, ``pdfa``), JUnit XML (``junit``), the console lines (``console``)."""
