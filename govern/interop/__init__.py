"""Reading other editing tools' files: EasyEdit's hyper-parameters and data records (`govern.interop.easyedit`)."""
