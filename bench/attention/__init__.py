"""The article's look inside AFM: `analysis` trains and computes the attention statistics and the planted-pair
recovery, `report` only renders them (Markdown and PNGs)."""
