"""The one check of a "choose one of" option, shared by every module that takes one."""


def check_choice(name, value, choices):
    """Raises a ValueError naming the option and the valid values unless ``value`` is one.

    Example
    -------
    >>> check_choice("head", "softmax", ("softmax", "aam"))
    >>> check_choice("head", "arc", ("softmax", "aam"))
    Traceback (most recent call last):
    ...
    ValueError: head='arc' is not valid; choose one of ['softmax', 'aam']
    """
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not valid; choose one of {list(choices)}")
