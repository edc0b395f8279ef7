"""Outputs: the PDF report, JUnit XML for CI systems."""
