"""`Registry`: one table per kind of part (methods, estimators, divergences, attacks, tasks...).

Adding a part is one class or record plus one `register` call next to it.
Tools, card validation and tests read the names from the registry, never
from a list of their own.
"""


class Registry:
    """Names to parts of one kind, in registration order.

    Args:
        kind: what the parts are, for error messages ("attack", "divergence").

    Example:
    ```python
    DIVERGENCES = Registry("divergence")

    @DIVERGENCES.register("squared_l2")
    class SquaredL2: ...

    DIVERGENCES.get("squared_l2")   # the class
    DIVERGENCES.names()             # ("squared_l2",)
    ```
    """

    def __init__(self, kind):
        self.kind = kind
        self._parts = {}

    def register(self, name, part=None):
        """Registers `part` under `name`; without `part`, a decorator that does."""
        if part is None:
            return lambda decorated: self.register(name, decorated)
        if not isinstance(name, str) or not name:
            raise ValueError(f"A {self.kind} name must be a non-empty string, got {name!r}")
        if name in self._parts:
            raise ValueError(f"{self.kind} {name!r} is registered already")
        self._parts[name] = part
        return part

    def unregister(self, name):
        """Removes `name` (for parts registered for a while, e.g. in a test)."""
        self.get(name)
        del self._parts[name]

    def get(self, name):
        """The part registered as `name`; a ValueError listing the names otherwise."""
        if not isinstance(name, str) or name not in self._parts:
            raise ValueError(f"Unknown {self.kind} {name!r}; expected one of {sorted(self._parts)}")
        return self._parts[name]

    def names(self):
        """The registered names, in registration order."""
        return tuple(self._parts)

    def items(self):
        return tuple(self._parts.items())

    def __contains__(self, name):
        return name in self._parts

    def __iter__(self):
        return iter(self._parts)

    def __len__(self):
        return len(self._parts)
