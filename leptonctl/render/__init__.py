"""Pure renderers: data in, rich renderables or JSON documents out."""
