"""apisensor's dependency map: build a graph from the store, render and export it."""
