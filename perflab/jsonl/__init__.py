"""JSON lines on disk: BufferedWriter and CompressedWriter (every flushed record survives a
kill; a full disk loses nothing), MemoryMappedReader and read_jsonl (with crash recovery),
the codecs, the torn-tail recovery, and the compiled line index (``_lineindex.c``)."""
