"""The letter: its source format, one document model, and the PDF and DOCX renderers."""
