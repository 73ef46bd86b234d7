"""Built-in plugins: they use exactly the hooks a third-party plugin uses."""
