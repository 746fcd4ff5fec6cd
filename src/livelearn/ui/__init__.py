"""The dashboard page, its data endpoints and the HTML report."""
