"""
Where the resource keeps its state: an asynchronous key-value contract
(L{interface.IStorage}) with leases, fencing tokens and change
notification, the stores that implement it (L{directory.DirectoryStorage}
on the state directory, L{memory.MemoryStorage} in memory), and the typed
records the resource reads and writes through any of them
(L{records.Records}).
"""
