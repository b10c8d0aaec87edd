"""C4 -> MDS -> object storage, and what the recipes stand on.

Commands (thin command lines, `python -m data_prep.X --help`): convert, verify, stats,
sample, tokenizer. The code behind them lives in four places:

    pipeline/       the conversion pipeline (records, parts, resume, verify, publish)
    storage/        where datasets live: the Remote contract and one module per backend
    streaming_ext/  our extensions of mosaicml-streaming, installed by one install()
    servers/        local stand-ins used offline and in tests (the OCI store)
"""
