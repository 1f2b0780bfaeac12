"""r53lb: Route 53 weighted records kept in line with the measured health of mail servers."""

__version__ = "0.1.0"
