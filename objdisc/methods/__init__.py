"""Object-discovery methods: pure tensor code turning patch features into one box per image."""
