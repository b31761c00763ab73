"""The overview dashboard's rows, top to bottom, one module each: every row answers one
question an operator asks, and its module holds the panels that answer it."""
