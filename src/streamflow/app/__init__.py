"""The entry points: the CLI, the demo, the monthly path, status, the load generator and what the
demo leaves running. They parse input, call the stages and format output."""
