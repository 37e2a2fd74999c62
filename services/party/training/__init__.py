"""The label party's role: align rows with feature parties and drive split training."""
