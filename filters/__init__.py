"""Text, language and image filters: one small class per rule, each returning keep or a reason."""
