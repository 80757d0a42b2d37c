/* placeholder so the library has a source until the tokenizer lands */
typedef int fr_tokenizer_placeholder;
