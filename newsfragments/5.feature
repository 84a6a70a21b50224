The resource keeps its host responsive while it orders many certificates:
at most 2 orders run at once; key generation runs in the resource's own
worker threads at a lower CPU priority (Linux), and renewal state and
exported files are written by those threads too, one at a time and in
order; the ACME client talks through a bare Twisted ``Agent`` (treq's
extra layers cost the event loop 12% of its time); ``ServerService``
freezes its start-up objects out of the garbage collector. ``check()``,
``whenSettled()`` and ``stopService()`` now wait for the writes they
started. ``makeHTTPClient`` returns the ``Agent`` itself.
